"""Clients of the configured server: one Redis/Valkey server, or a Redis Cluster.

A cluster URL is `redis+cluster://host:port` (or `rediss+cluster://`): any one node;
the client discovers the others and follows MOVED/ASK redirections itself."""

from typing import Any, cast

from faststream.redis import RedisBroker
from faststream.redis.broker.cluster_broker import RedisClusterBroker
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.connection import AbstractConnection as AsyncConnection
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

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


# The cluster clients offer the same commands as the single-server ones; they are typed as
# those so that the code using them needs no union type.


def sync_client(url: str, **options: Any) -> Redis:
    if is_cluster(url):
        return cast(Redis, RedisCluster.from_url(node_url(url), **options))
    return Redis.from_url(url, **options)


def async_client(url: str, **options: Any) -> AsyncRedis:
    if is_cluster(url):
        return cast(AsyncRedis, AsyncRedisCluster.from_url(node_url(url), **options))
    return AsyncRedis.from_url(url, **options)


def make_broker(url: str, **options: Any) -> RedisBroker:
    if is_cluster(url):
        return RedisClusterBroker(node_url(url), **options)
    return RedisBroker(url, **options)
