"""Stream growth: trim what nobody needs any more, never an entry a group has not acked.

- input and control streams: below the oldest entry that any consumer group on them
  (the tagger's or another module's) still has pending or has not been delivered yet;
- output stream: entries older than TAGGER_RETENTION_S, and never below what the
  tagger's own file sinks still need (other readers get the retention, documented);
- dead-letter and control-reply streams: older than TAGGER_RETENTION_S.
"""

from typing import Any

from redis.asyncio import Redis

from tagger.keys import Keys


def _id_key(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq or 0)


async def oldest_needed(client: Redis, stream: str, only: set[str] | None = None) -> bytes | None:
    """The lowest id some consumer group (of `only`, if given) still needs; None when
    the stream has no such group (then nothing is known to be safe to trim)."""
    try:
        groups: Any = await client.xinfo_groups(stream)
    except Exception:  # no such stream
        return None
    needed = []
    for group in groups:
        name = group["name"].decode()
        if only is not None and name not in only:
            continue
        if group["pending"]:
            summary: Any = await client.xpending(stream, name)
            if summary["min"] is not None:  # None: all acked since XINFO GROUPS read
                needed.append(summary["min"])
                continue
        # Everything up to last-delivered-id is acked; MINID keeps that one entry.
        needed.append(group["last-delivered-id"])
    return min(needed, key=_id_key) if needed else None


async def trim_streams(
    client: Redis, keys: Keys, sink_groups: set[str], retention_ms: int, now_ms: int
) -> dict[str, int]:
    """Trim every stream as above; returns entries removed per stream."""
    removed = {}
    for stream in (keys.input_stream, keys.control_stream):
        floor = await oldest_needed(client, stream)
        if floor is not None:
            removed[stream] = await _trim(client, stream, floor)
    cutoff = f"{max(now_ms - retention_ms, 0)}-0".encode()
    sinks_floor = await oldest_needed(client, keys.output_stream, only=sink_groups)
    output_floor = min(cutoff, sinks_floor, key=_id_key) if sinks_floor else cutoff
    removed[keys.output_stream] = await _trim(client, keys.output_stream, output_floor)
    for stream in (keys.dead_letter_stream, keys.control_replies):
        removed[stream] = await _trim(client, stream, cutoff)
    return removed


async def _trim(client: Redis, stream: str, minid: bytes) -> int:
    # Exact, not "~": the result is predictable, and it runs seconds apart, not per entry.
    removed: int = await client.xtrim(stream, minid=minid, approximate=False)
    return removed
