"""Taking a partition over (or back, after a failure): its state from the server, then
every entry still pending in the group, in order, before any new one.

An entry that keeps failing (a foreign value where its user's sessions live) is tried
alone, and once it has failed TAGGER_MAX_DELIVERIES times it is dead-lettered as
`poison`: in-order tagging means one entry that always fails would otherwise hold up
every entry after it."""

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from tagger.errors import TRANSIENT_ERRORS
from tagger.runtime.commit import Refused
from tagger.runtime.owner import Entry, Fenced, PartitionOwner

log = logging.getLogger("tagger")
TagBatch = Callable[[PartitionOwner, Sequence[Entry]], Awaitable[None]]
HandleControl = Callable[[PartitionOwner, bytes, dict[bytes, bytes]], Awaitable[None]]


class Stuck(Exception):
    """An entry failed alone and has deliveries left: it stays pending, tried again later."""


async def read(owner: PartitionOwner, stream: str, from_id: str, count: int) -> list[Entry]:
    """Up to `count` entries of `stream` for this consumer, without blocking: new ones
    (">") or its own pending ones ("0"; deleted ones, with no fields, left out)."""
    reply: Any = await owner.client.xreadgroup(
        owner.keys.group, owner.consumer, {stream: from_id}, count=count
    )
    return [(i, f) for i, f in (reply[0][1] if reply else []) if f is not None]


async def pending_here(owner: PartitionOwner, stream: str, entries: Sequence[Entry]) -> list[Entry]:
    """Those of `entries` still pending for this consumer (not yet tagged and acked)."""
    found: Any = await owner.client.xpending_range(
        stream, owner.keys.group, min=entries[0][0], max=entries[-1][0], count=len(entries),
        consumername=owner.consumer,
    )  # fmt: skip
    ids = {p["message_id"] for p in found}
    return [e for e in entries if e[0] in ids]


async def claim_all(owner: PartitionOwner, stream: str, count: int) -> int:
    """Move every entry pending in the group on `stream` to this consumer: the owner is
    the only reader of its partition, whoever read them before."""
    start_id, claimed = b"0-0", 0
    while True:
        start_id, entries, *_ = await owner.client.xautoclaim(
            stream, owner.keys.group, owner.consumer, min_idle_time=0, start_id=start_id,
            count=count,
        )  # fmt: skip
        claimed += len(entries)
        if start_id == b"0-0":
            return claimed


async def recover(
    owner: PartitionOwner,
    batch_size: int,
    max_deliveries: int,
    tag_batch: TagBatch,
    handle_control: HandleControl,
) -> None:
    """Load the owner's state, then tag every pending entry of its partition in order."""
    k = owner.keys
    await owner.load()
    claimed = await claim_all(owner, k.input_stream, batch_size)
    claimed += await claim_all(owner, k.control_stream, batch_size)
    if claimed:
        log.info(
            "partition %d: took over %d pending entries", k.partition, claimed,
            extra={"claimed": claimed, "partition": k.partition},
        )  # fmt: skip
    while entries := await read(owner, k.input_stream, "0", batch_size):
        try:
            await tag_batch(owner, entries)
        except (Fenced, Refused, *TRANSIENT_ERRORS):
            raise
        except Exception as exc:
            log.error("batch failed (%r); trying its entries one by one", exc)
            await _one_by_one(owner, entries, max_deliveries, tag_batch)
    while controls := await read(owner, k.control_stream, "0", batch_size):
        for entry_id, fields in controls:
            await handle_control(owner, entry_id, fields)
    owner.needs_recovery = False


async def _one_by_one(
    owner: PartitionOwner, entries: Sequence[Entry], max_deliveries: int, tag_batch: TagBatch
) -> None:
    for entry in entries:
        try:
            await tag_batch(owner, [entry])
            owner.failures.pop(entry[0], None)
        except (Fenced, Refused, *TRANSIENT_ERRORS):
            raise
        except Exception as exc:
            failures = owner.failures[entry[0]] = owner.failures.get(entry[0], 0) + 1
            if failures < max_deliveries:
                raise Stuck(
                    f"entry {entry[0].decode()} failed ({exc!r}); it stays pending"
                ) from exc
            log.error("entry %s is poison (%r); dead-lettering it", entry[0].decode(), exc)
            await owner.reject(
                [entry],
                "poison",
                f"Delivered {failures} times and never tagged ({exc!r}); "
                "fix the cause, then publish the event again.",
            )
            owner.failures.pop(entry[0], None)
