"""Clients of the configured server: one Redis/Valkey server, or a Redis Cluster.

A cluster URL is `redis+cluster://host:port` (or `rediss+cluster://`): any one node;
the client discovers the others and follows MOVED/ASK redirections itself."""

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from typing import Any, cast

from faststream.redis import RedisBroker
from faststream.redis.broker.cluster_broker import RedisClusterBroker
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from tagger.errors import REFUSING_WRITES, SERVER_ERRORS
from tagger.settings import is_cluster


def _closed_writer_is_a_connection_error() -> None:
    """redis-py 8.1's asyncio connection, written to after a concurrent disconnect closed
    it (a failover: another task saw the node go), raises AttributeError or TypeError from
    its writer instead of ConnectionError (redis-py issue 4287, fixed after 8.1.0). Those
    escape every retry, the service's included, and a file sink that met one stopped the
    worker (seen in tests/test_cluster.py's failover test). Here they become the
    ConnectionError they are; any other AttributeError or TypeError goes on as it was."""
    send = AsyncConnection.send_packed_command

    async def send_packed_command(self: Any, command: Any, check_health: bool = True) -> None:
        try:
            await send(self, command, check_health)
        except (AttributeError, TypeError) as exc:
            writer = self._writer
            if writer is None or writer.transport is None or writer.transport.is_closing():
                raise RedisConnectionError(f"connection closed while writing ({exc!r})") from exc
            raise

    AsyncConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]


_closed_writer_is_a_connection_error()

PLAIN_ARGUMENTS = frozenset((bytes, str, int))
REDIS_PY_PACK = AsyncConnection.pack_command


def resp(
    args: Sequence[bytes | str | int], encoding: str = "utf-8", errors: str = "strict"
) -> bytes:
    """A command of bytes, str and int as the server reads it (RESP), in one join."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if type(arg) is str:
            data = arg.encode(encoding, errors)
        elif type(arg) is int:
            data = b"%d" % arg
        else:
            data = arg  # type: ignore[assignment]
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _one_join_packing() -> None:
    """redis-py 8.1's asyncio connection packs a command in Python and joins its buffer
    again after each argument (until 6 kB): a 500-event commit of ~5,000 arguments cost
    about 7 µs per event to pack (bench.worker_cpu), more than the session rules. (Its sync
    connection packs with hiredis instead.) A command of only bytes, str and int, which is
    what the tagger sends, is packed here in one join, to the same bytes; any other goes to
    redis-py's own packer, as before."""
    pack = REDIS_PY_PACK

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        if not PLAIN_ARGUMENTS.issuperset(map(type, args)):
            return pack(self, *args)
        if isinstance(args[0], str):  # as redis-py does: "XINFO GROUPS" is two words
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        return [resp(args, self.encoder.encoding, self.encoder.encoding_errors)]

    AsyncConnection.pack_command = pack_command  # type: ignore[method-assign]


_one_join_packing()


def node_url(url: str) -> str:
    """The URL of the node a cluster URL names, as redis-py's cluster clients take it."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.removesuffix('+cluster')}://{rest}"


def primary_client(url: str, host: str, port: int) -> AsyncRedis:
    """One connection to one node of the cluster `url` names (same credentials and TLS):
    for the commands that must share a connection, like a write and the WAIT after it."""
    scheme, rest = node_url(url).split("://", 1)
    rest, _, query = rest.partition("?")
    userinfo = rest.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return AsyncRedis.from_url(
        f"{scheme}://{netloc}" + (f"?{query}" if query else ""), single_connection_client=True
    )


# Every client's socket behaviour, set here rather than left to the library: redis-py 8.1
# has 5 s timeouts and keepalive by default, 5.2 (which pyproject admits) none, and
# FastStream passes its own (none). A network partition drops packets without a reset:
# without a timeout a read waits for ever. With these, a dead path is noticed within
# seconds (a read past its timeout, or keepalive probes unanswered for 5 + 3 x 2 s), the
# command is retried a few times with backoff (redis-py's Retry), and then the caller's
# own handling (a worker's retry loop, /ready's "not ready") takes over.
SOCKET_TIMEOUT_S = 5.0  # beyond the longest blocking read of ours (1 s), plus TAGGER_BLOCK_MS
CONNECT_TIMEOUT_S = 3.0
KEEPALIVE = {socket.TCP_KEEPIDLE: 5, socket.TCP_KEEPINTVL: 2, socket.TCP_KEEPCNT: 3}


def connection_options(block_ms: int = 0, asynchronous: bool = True) -> dict[str, Any]:
    """Timeouts, keepalive and retry for a client whose blocking reads wait `block_ms`."""
    retry_class = AsyncRetry if asynchronous else Retry
    return {
        "socket_timeout": SOCKET_TIMEOUT_S + block_ms / 1000,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "socket_keepalive_options": KEEPALIVE,
        "health_check_interval": 15,
        "retry": retry_class(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
    }


# The cluster clients offer the same commands as the single-server ones; they are typed as
# those so that the code using them needs no union type.


def sync_client(url: str, **options: Any) -> Redis:
    options = connection_options(asynchronous=False) | options
    if is_cluster(url):
        options.pop("health_check_interval")  # the cluster client checks its nodes itself
        return cast(Redis, RedisCluster.from_url(node_url(url), **options))
    return Redis.from_url(url, **options)


def async_client(url: str, **options: Any) -> AsyncRedis:
    options = connection_options() | options
    if is_cluster(url):
        options.pop("health_check_interval")
        return cast(AsyncRedis, AsyncRedisCluster.from_url(node_url(url), **options))
    return AsyncRedis.from_url(url, **options)


def make_broker(url: str, block_ms: int = 0, **options: Any) -> RedisBroker:
    options = connection_options(block_ms) | options
    if is_cluster(url):
        options.pop("health_check_interval")
        return RedisClusterBroker(node_url(url), **options)
    return RedisBroker(url, **options)


PROBE_INTERVAL_S = 0.25


async def pause(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep, but wake at once when `stopping` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), timeout=seconds)


async def back_off(
    client: AsyncRedis, exc: Exception, seconds: float, stopping: asyncio.Event | None = None
) -> None:
    """Wait `seconds` before retrying after `exc`; but when the server was unreachable
    (down, restarting, cut off) wake as soon as it answers PING again, so that a long
    backoff step does not outlast the outage. Only a server seen away and then back ends
    the pause: one that answered all along (a connection it closed on a command it
    refused, or one that refuses writes: out of memory, a replica) gets the whole pause,
    or a failure that repeats would be retried in a tight loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    probing = not isinstance(exc, REFUSING_WRITES)
    seen_away = False
    while (left := deadline - loop.time()) > 0:
        if stopping is not None and stopping.is_set():
            return
        step = min(left, PROBE_INTERVAL_S)
        started = loop.time()
        if probing:
            try:
                await asyncio.wait_for(client.ping(), timeout=step)
                if seen_away:
                    return
            except (TimeoutError, *SERVER_ERRORS):
                seen_away = True
        await asyncio.sleep(max(0.0, started + step - loop.time()))
