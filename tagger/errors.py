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


class RoleChanged(redis_errors.ReadOnlyError):
    """A blocked read was cut short because the server stopped being a primary (it
    answers "UNBLOCKED ... (master -> replica?)"): read-only, for now."""

    @staticmethod
    def raised_by(exc: redis_errors.ResponseError) -> bool:
        return str(exc).startswith("UNBLOCKED")


# What a lost or restarting server raises (BusyLoadingError is a ConnectionError): worth
# retrying, with these pauses, rather than failing the service.
# A lost server, and a cluster in the middle of a failover (no primary for a slot yet, a
# demoted primary that only reads, slots in migration): all pass once the cluster settles.
TRANSIENT_ERRORS = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterDownError,
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.SlotNotCoveredError,
    # A server at its maxmemory with noeviction refuses writes (a commit is refused
    # whole: nothing of the batch is written or acked) until memory is freed.
    redis_errors.OutOfMemoryError,
)
# The transient errors of a server that answers but refuses writes: `/ready` reports them.
REFUSING_WRITES = (redis_errors.OutOfMemoryError, redis_errors.ReadOnlyError)


def transient_advice(exc: Exception) -> str:
    """Why the server cannot be used just now, and what to do, for a retry's log line."""
    if isinstance(exc, redis_errors.OutOfMemoryError):
        return (
            f"the server is out of memory and refuses writes ({exc}); nothing was acked. "
            "Free memory on it or raise its maxmemory; tagging resumes by itself"
        )
    if isinstance(exc, redis_errors.ReadOnlyError):
        return (
            f"the server is read-only ({exc}: a replica, after a failover?); nothing was "
            "acked. Point TAGGER_REDIS_URL at the primary, or promote this server"
        )
    return f"server unreachable ({exc})"


RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)

# Everything the client library raises about the server. redis-py's cluster client raises
# RedisClusterException, which is not a RedisError, when it cannot learn the slot map.
SERVER_ERRORS = (redis_errors.RedisError, redis_errors.RedisClusterException)


def server_advice(exc: Exception) -> str:
    """What to do when the server cannot be used, for the end of an error message."""
    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return (
            "the server's certificate is not trusted: name its CA in the URL, "
            "rediss://host:port?ssl_ca_certs=/path/to/ca.pem"
        )
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, redis_errors.NoPermissionError) or "no permissions" in str(cause):
        return "grant the user the rules `tagger acl` prints (on every node of a cluster)"
    if "Cluster mode is not enabled" in str(exc):
        return "the URL names a cluster but the server is a single one: use redis://"
    return "start the server or fix TAGGER_REDIS_URL"
