"""Clients of the configured server: one Redis/Valkey server, or a Redis Cluster.

A cluster URL is `redis+cluster://host:port` (or `rediss+cluster://`): any one node;
the client discovers the others and follows MOVED/ASK redirections itself."""

from typing import Any, cast

from faststream.redis import RedisBroker
from faststream.redis.broker.cluster_broker import RedisClusterBroker
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from tagger.settings import is_cluster


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
