"""The worker app (kept at this path for `tagger.worker.Worker` users)."""

from tagger.runtime.worker import Worker, ensure_group

__all__ = ["Worker", "ensure_group"]
