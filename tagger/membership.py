"""Which worker serves which partitions: live workers keep a heartbeat in one sorted set,
and partition p belongs to the (p mod n)-th of the n live workers in name order.

Every worker computes the same split from the same set, with no coordinator. Correctness
never depends on it: a partition that two workers read for a moment (while the split
changes) is still tagged in order, because the script refuses a batch while an older
entry is pending elsewhere. The split only keeps workers from contending."""

import time
from typing import Any

from redis.asyncio import Redis


async def beat(client: Redis, key: str, me: str, ttl_ms: int) -> list[str]:
    """Renew `me`, forget workers whose heartbeat lapsed; the live workers, sorted."""
    now_ms = int(time.time() * 1000)
    async with client.pipeline(transaction=False) as pipe:
        pipe.zadd(key, {me: now_ms + ttl_ms})
        pipe.zremrangebyscore(key, "-inf", now_ms)
        pipe.zrange(key, 0, -1)
        replies: Any = await pipe.execute()
    return sorted(member.decode() for member in replies[-1])


async def leave(client: Redis, key: str, me: str) -> None:
    """Hand this worker's partitions to the others at once (not after the heartbeat TTL)."""
    await client.zrem(key, me)


def share(members: list[str], me: str, partitions: int) -> set[int]:
    """The partitions `me` serves among `members` (all of them when it is not listed)."""
    if me not in members:
        return set(range(partitions))
    n, index = len(members), members.index(me)
    return {p for p in range(partitions) if p % n == index}
