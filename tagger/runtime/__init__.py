"""The runtime: partition owners, their atomic commit, recovery, and the worker app."""

from tagger.runtime.commit import Commit, CommitScript, Refused, build_commit
from tagger.runtime.owner import Checked, CorruptState, Fenced, PartitionOwner

__all__ = [
    "Checked",
    "Commit",
    "CommitScript",
    "CorruptState",
    "Fenced",
    "PartitionOwner",
    "Refused",
    "build_commit",
]
