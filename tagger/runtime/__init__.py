"""The runtime: partition owners, their atomic commit, recovery, and the worker app."""

from tagger.runtime.commit import Commit, CommitScript, Refused, build_commit
from tagger.runtime.owner import Checked, CorruptState, Fenced, PartitionOwner
from tagger.runtime.transaction import CommitForms, Transaction

__all__ = [
    "Checked",
    "Commit",
    "CommitForms",
    "CommitScript",
    "CorruptState",
    "Fenced",
    "PartitionOwner",
    "Refused",
    "Transaction",
    "build_commit",
]
