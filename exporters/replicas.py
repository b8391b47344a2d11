"""File sinks store only what a replica holds too.

Replication is asynchronous: a batch the tagger wrote on a primary that died before passing
it on is lost with that primary, and the tagger tags the same events again on the promoted
replica, under new stream ids. A sink that had stored the lost copy would store the new one
as well, so on a cluster a sink waits until a replica has what it read before storing it.

WAIT counts only the writes of the connection that sends it, and the cluster client spreads
commands over several connections, so the gate keeps one connection of its own to the
partition's primary: a small write there (the last id read, in the sink's `:read` key)
comes after everything the sink read, and `WAIT 1` on that connection covers it all."""

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from tagger.connect import primary_client
from tagger.errors import TaggerError


class ReplicasBehind(TaggerError):
    """No replica confirmed in time what the sink read: store nothing yet."""


class ReplicaGate:
    def __init__(self, client: Redis, url: str | None, key: str, mark: str, wait_ms: int) -> None:
        # Only a cluster has replicas the tagger knows of (and fails over to).
        self.enabled = isinstance(client, RedisCluster) and url is not None
        self.cluster = client
        self.url = url or ""
        self.key, self.mark, self.wait_ms = key, mark, wait_ms
        self._primary: Redis | None = None

    async def confirm(self, last_id: bytes) -> None:
        """Return once a replica of `key`'s primary holds everything up to `last_id` (at
        once where the slot has no replica); raise ReplicasBehind after `wait_ms`."""
        if not self.enabled:
            return
        cluster: RedisCluster = self.cluster  # type: ignore[assignment]
        try:
            if self._primary is None:
                node: Any = cluster.get_node_from_key(self.key)
                self._primary = primary_client(self.url, node.host, int(node.port))
            await self._primary.set(self.mark, last_id, px=self.wait_ms * 10)
            if not await self._has_replica():
                return  # nothing to fail over to, so nothing to lose this way
            acked = int(await self._primary.wait(1, self.wait_ms))
        except RedisError as exc:  # the primary moved or died: ask the slot map again
            await self.close()
            raise ReplicasBehind(f"the partition's primary did not answer ({exc})") from exc
        if acked < 1:
            raise ReplicasBehind(
                f"no replica confirmed {last_id.decode()} within {self.wait_ms} ms; the sink "
                "stores nothing until one does (check the replicas' links to their primary)"
            )

    async def _has_replica(self) -> bool:
        """Whether the primary has a replica, failed ones included: one that is down now may
        come back and be promoted without what it missed. Asked each time, of the primary:
        the client's slot map is learnt once and lists only live, synced replicas."""
        assert self._primary is not None
        nodes: dict[str, dict[str, str]] = await self._primary.cluster("NODES")
        me = next(n["node_id"] for n in nodes.values() if "myself" in n["flags"])
        return any(n["master_id"] == me for n in nodes.values())

    async def close(self) -> None:
        if self._primary is not None:
            primary, self._primary = self._primary, None
            await primary.aclose()
