"""A partition's one path: read -> check -> rules -> commit (the ack is in the commit),
with recovery first whenever the owner needs it, and retries of what it can ride out."""

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tagger.connect import back_off, pause
from tagger.control import handle_request
from tagger.errors import REFUSING_WRITES, RETRY_DELAYS_S, TRANSIENT_ERRORS, transient_advice
from tagger.metrics import Metrics
from tagger.report import BatchReport, count_fields
from tagger.rules import Counts
from tagger.runtime.commit import Refused
from tagger.runtime.owner import Checked, Entry, Fenced, PartitionOwner
from tagger.runtime.recovery import Stuck, pending_here, read, recover
from tagger.settings import Settings

log = logging.getLogger("tagger")
# One step of work as the owner; told whether a recovery ran since its entries were read.
Step = Callable[[PartitionOwner, bool], Awaitable[None]]


class TagPath:
    """Tags what a partition's subscribers read; `counts` sums every batch."""

    def __init__(self, settings: Settings, metrics: Metrics, stopping: asyncio.Event) -> None:
        self.settings, self.metrics, self.stopping = settings, metrics, stopping
        self.counts = Counts()
        self._report = BatchReport()
        # Why the server refuses our writes just now (out of memory, read-only), for /ready.
        self.refusing_writes: str | None = None

    def note_refusal(self, exc: Exception) -> None:
        """A server that refuses writes (out of memory, read-only) is reported by /ready
        until a write goes through again."""
        if isinstance(exc, REFUSING_WRITES):
            self.refusing_writes = transient_advice(exc)

    async def handle(self, owner: PartitionOwner, batch: dict[str, Any]) -> None:
        """Tag the batch FastStream read, then the partition's next entries while they keep
        coming (a steady stream stays here rather than going through FastStream's consume
        path every few entries). The next entries are read, and checked in a thread, while
        the batch before them is committed, so the server's work and the worker's overlap;
        commits stay one after another, in stream order."""
        entries: list[Entry] = list(zip(batch["message_ids"], batch["data"], strict=True))
        checked: Checked | None = None
        since = owner.recoveries
        while entries:
            tagging = asyncio.create_task(
                self.serve(owner, self._tag_step(entries, checked), since)
            )
            since = owner.recoveries  # a recovery from here on may see what the read brings
            following = await self._read_ahead(owner)
            checking = None
            if len(following) >= 50:  # the check is pure Python: off the event loop
                checking = asyncio.create_task(
                    asyncio.to_thread(
                        Checked, owner.keys, following, owner.settings.max_clock_skew_s
                    )
                )
            served = await tagging
            checked = await checking if checking is not None else None
            if not served:
                return  # what was read stays pending: recovery or the next owner tags it
            entries = following

    def _tag_step(self, entries: list[Entry], checked: Checked | None) -> Step:
        async def step(owner: PartitionOwner, recovered: bool) -> None:
            if recovered:  # a recovery may have tagged some of them: only the rest, if any
                left = await pending_here(owner, owner.keys.input_stream, entries)
                if len(left) < len(entries):
                    if left:
                        await self.tag(owner, left)
                    return
            await self.tag(owner, entries, checked)

        return step

    async def _read_ahead(self, owner: PartitionOwner) -> list[Entry]:
        if self.stopping.is_set() or owner.epoch is None or not owner.reading:
            return []
        try:
            return await read(owner, owner.keys.input_stream, ">", self.settings.batch_size)
        except TRANSIENT_ERRORS:
            return []  # FastStream reads again

    async def serve(
        self, owner: PartitionOwner, step: Step | None, since: int | None = None
    ) -> bool:
        """Run `step` (None: only recover) as the partition's owner, recovering first when
        the owner needs it, and retrying what the service can ride out; False when the
        partition is no longer ours or the worker stops (what is unacked stays pending for
        the next owner). `since`: the owner's recovery count when the step's entries were
        read; the step is told whether a recovery ran after that (it may have tagged them)."""
        delays = itertools.chain(RETRY_DELAYS_S, itertools.repeat(RETRY_DELAYS_S[-1]))
        generation = owner.recoveries if since is None else since
        while not self.stopping.is_set():
            try:
                async with owner.recovery_lock:
                    if owner.needs_recovery:
                        s = self.settings
                        await recover(owner, s.batch_size, s.max_deliveries, self.tag, self.control)
                        owner.recoveries += 1
                if step is not None:
                    await step(owner, owner.recoveries != generation)
                self.refusing_writes = None
                return True
            except Fenced as exc:
                log.warning("%s", exc)
                return False
            except Refused as exc:  # an older entry pending elsewhere: claimed, in order
                log.info("partition %d: %s; taking it over", owner.keys.partition, exc)
                owner.needs_recovery = True
            except Stuck as exc:
                log.warning("%s", exc)
                owner.needs_recovery = True
                await pause(self.stopping, min(max(self.settings.claim_idle_ms / 1000, 0.02), 1))
            except TRANSIENT_ERRORS as exc:
                delay_s = next(delays)
                log.warning("%s; retrying in %.1f s", transient_advice(exc), delay_s)
                self.note_refusal(exc)
                owner.needs_recovery = True
                await back_off(owner.client, exc, delay_s, self.stopping)
            except Exception as exc:
                log.exception(
                    "partition %d: batch failed (%r); recovering", owner.keys.partition, exc
                )
                owner.needs_recovery = True
        return False

    async def tag(
        self, owner: PartitionOwner, entries: Any, checked: Checked | None = None
    ) -> None:
        started = time.perf_counter()
        if checked is None and len(entries) >= 50:  # pure Python: off the event loop
            checked = await asyncio.to_thread(
                Checked, owner.keys, entries, owner.settings.max_clock_skew_s
            )
        elif checked is None:
            checked = Checked(owner.keys, entries, owner.settings.max_clock_skew_s)
        counts = await owner.tag(checked)
        self.counts.add(counts)
        self._batch_done(entries, counts, time.perf_counter() - started)

    def control_step(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Step:
        async def step(owner: PartitionOwner, recovered: bool) -> None:
            entry = (entry_id, fields)
            if not recovered or await pending_here(owner, owner.keys.control_stream, [entry]):
                await self.control(owner, entry_id, fields)

        return step

    async def control(self, owner: PartitionOwner, entry_id: bytes, fields: Any) -> None:
        reply = await handle_request(owner, entry_id, fields)
        self.metrics.control_done(reply.status, reply.reason)
        log.info("control %s: %s %s", reply.request_id, reply.status, reply.reason)

    def _batch_done(self, entries: list[Entry], counts: Counts, seconds: float) -> None:
        oldest_ms = int(entries[0][0].split(b"-", 1)[0])
        wait_s = time.time() - oldest_ms / 1000
        self.metrics.batch_done(counts, len(entries), seconds, wait_s)
        log.debug(
            "batch of %d: %d tagged, %d dead, %d duplicates in %.1f ms",
            len(entries), counts.tagged, counts.dead, counts.duplicates, seconds * 1000,
            extra={"batch": len(entries), "tag_ms": round(seconds * 1000, 2),
                   **count_fields(counts)},
        )  # fmt: skip
        self._report.add(counts, seconds)
