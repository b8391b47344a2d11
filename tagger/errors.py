"""One exception root; every message tells the operator what to do next."""

from redis import exceptions as redis_errors


class TaggerError(Exception):
    """Root of every error the tagger raises on purpose."""


class GroupMissing(TaggerError):
    """The consumer group does not exist on the input stream."""


class EmbeddedServerError(TaggerError):
    """The embedded Valkey server could not be started."""


class WorkerFailed(TaggerError):
    """A background task (a file sink above all) failed; the service stops instead of
    acking what it did not store."""


# What a lost or restarting server raises (BusyLoadingError is a ConnectionError): worth
# retrying, with these pauses, rather than failing the service.
TRANSIENT_ERRORS = (redis_errors.ConnectionError, redis_errors.TimeoutError)
RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
