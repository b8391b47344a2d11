"""The least-privilege ACL of a tagger user: only the commands and keys the service uses.

`tagger acl` prints the ACL SETUSER line for the current settings; tests/test_acl.py runs
every command of the service as such a user, so the list cannot fall behind the code."""

from tagger.keys import Keys
from tagger.settings import Settings

# Every command the service, its sinks, its scripts and the CLI send (a script's own
# calls are checked against the caller's ACL too).
COMMANDS = (
    # streams
    "xadd", "xreadgroup", "xread", "xack", "xgroup|create", "xinfo|groups", "xinfo|stream",
    "xpending", "xautoclaim", "xrange", "xrevrange", "xlen", "xtrim", "xdel",
    # session state, registry, dedup marks, partition and sink leases, owner epochs
    "hset", "hget", "hmget", "hdel", "hincrby", "hlen", "hgetall",
    "zadd", "zrange", "zrevrange", "zrangebyscore", "zrevrangebyscore", "zrem",
    "zremrangebyscore", "zscore", "zmscore", "zcard",
    "set", "get", "del", "exists", "pexpire", "type", "incr",
    # the commit and lease scripts, loaded once per server start
    "eval", "evalsha", "script|load",
    # transactions (the commit on one server, control replies, erasure), connection
    # set-up (redis-py tolerates a refused CLIENT SETINFO, which Redis 7.0 does not know)
    "multi", "exec", "watch", "unwatch", "ping", "select",
)  # fmt: skip
# A cluster client learns the slot map, and which arguments are keys, from the server;
# the file sinks WAIT for a replica (exporters/replicas.py).
CLUSTER_COMMANDS = ("cluster|slots", "cluster|nodes", "command", "wait")


def key_patterns(settings: Settings) -> list[str]:
    patterns = []
    for keys in Keys.every_partition(settings):
        streams = (
            keys.input_stream,
            keys.output_stream,
            keys.dead_letter_stream,
            keys.control_stream,
            keys.control_replies,
        )
        patterns += [f"~{s}" for s in streams]
    return [*patterns, f"~{settings.state_prefix}:*"]


def acl_rules(settings: Settings) -> list[str]:
    """Rules for ACL SETUSER (after `on` and the password)."""
    commands = COMMANDS + (CLUSTER_COMMANDS if settings.cluster else ())
    return ["resetkeys", *key_patterns(settings), "resetchannels", "-@all"] + [
        f"+{c}" for c in commands
    ]
