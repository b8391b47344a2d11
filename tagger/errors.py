"""One exception root; every message tells the operator what to do next."""


class TaggerError(Exception):
    """Root of every error the tagger raises on purpose."""


class GroupMissing(TaggerError):
    """The consumer group does not exist on the input stream."""


class EmbeddedServerError(TaggerError):
    """The embedded Valkey server could not be started."""


class WorkerFailed(TaggerError):
    """A background task (a file sink above all) failed; the service stops instead of
    acking what it did not store."""
