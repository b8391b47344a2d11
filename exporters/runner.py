"""Runs a file sink on the tagged stream: its own group, one writer at a time, ack after fsync."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from exporters.replicas import ReplicaGate, ReplicasBehind
from tagger.connect import back_off, pause
from tagger.errors import (
    RETRY_DELAYS_S,
    TRANSIENT_ERRORS,
    RoleChanged,
    TaggerError,
    transient_advice,
)
from tagger.keys import Keys
from tagger.settings import Settings

log = logging.getLogger("tagger.sink")
PAUSE_MS = 300_000  # a pause (compact, erase) lapses by itself if its holder dies
WAIT_FOR_SINK_S = 30.0
Entry = tuple[bytes, dict[bytes, bytes]]

# Take the lease if free, or extend it if it is ours.
_LEASE_LUA = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


# Drop the lease only if it is still ours.
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Sink(Protocol):
    name: str

    def add(self, entries: Sequence[Entry], recovering: bool) -> list[bytes]: ...

    def flush(self) -> list[bytes]: ...


class SinkRunner:
    """Reads the output stream for one sink and acks only what the sink made durable."""

    def __init__(
        self,
        client: Redis,
        settings: Settings,
        keys: Keys,
        sink: Sink,
        consumer: str,
        may_lead: Callable[[], bool] = lambda: True,
    ) -> None:
        self.client = client
        self.sink = sink
        self.keys = keys  # of the partition whose output stream this runner stores
        self.group = self.keys.sink_group(sink.name)
        self.consumer = consumer
        self.batch_size = settings.batch_size
        self.block_ms = settings.block_ms
        self.lease_ms = settings.sink_lease_ms
        # Reads, acks and lease renewals are writes to the server: under appendfsync
        # always each costs it an fsync, which the tagging's commits queue behind. At a
        # trickle the sinks read a few entries at a time, so they linger between reads of
        # less than a batch, and renew the lease only every sixth of it. bench.latency
        # (2,000 events/s, docs/performance.md): the tagging's p50 4.2-4.6 ms before,
        # 3.9-4.1 ms with a linger of 25 ms; 100 ms gave no better p50, and a worse p99
        # (the sinks' work comes in larger bursts).
        self.linger_s = settings.sink_linger_ms / 1000
        self._renew_at = 0.0  # monotonic: before it, the lease we hold needs no renewal
        self._lease = client.register_script(_LEASE_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._leader = False
        self._may_lead = may_lead  # False while another worker serves this partition
        self._replicas = ReplicaGate(
            client,
            settings.redis_url,
            keys.output_stream,
            keys.sink_read(sink.name),
            wait_ms=max(self.lease_ms // 3, 100),  # give up (and retry) while still leader
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop` is set (then it writes out what it holds and returns). A failed
        write propagates: nothing unwritten is acked. A lost server connection does not:
        the runner retries with backoff and, as leader again, takes over its own pending
        entries (skipping what is already on disk)."""
        try:
            await self._run_retrying(stop)
        finally:
            await self._replicas.close()

    async def _run_retrying(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            connected_at = time.monotonic()
            try:
                await self._run_connected(stop)
                return
            except (*TRANSIENT_ERRORS, ReplicasBehind) as exc:
                await self._lose_connection()
                # Back off while the server stays away; start over after a good spell.
                failures = 1 if time.monotonic() - connected_at > 30 else failures + 1
                delay_s = RETRY_DELAYS_S[min(failures, len(RETRY_DELAYS_S)) - 1]
                log.warning(
                    "%s sink: %s; retrying in %.1f s",
                    self.sink.name,
                    exc if isinstance(exc, ReplicasBehind) else transient_advice(exc),
                    delay_s,
                )
                await back_off(self.client, exc, delay_s)

    async def _run_connected(self, stop: asyncio.Event) -> None:
        await create_group(self.client, self.keys.output_stream, self.group)
        while not stop.is_set():
            paused = await self.client.exists(self.keys.sink_pause(self.sink.name))
            if paused or not self._may_lead():
                await self._yield_lease()  # `tagger compact` asked, or another worker serves it
                await asyncio.sleep(0.2)
                continue
            if not await self._hold_lease():
                self._leader = False
                await asyncio.sleep(self.lease_ms / 3000)
                continue
            if not self._leader:
                self._leader = True
                await self._recover()
            if 0 < await self._step() < self.batch_size and self.linger_s > 0:
                await pause(stop, self.linger_s)
        if self._leader:
            await self._ack(await asyncio.to_thread(self.sink.flush))

    async def _lose_connection(self) -> None:
        """Store what the sink holds (the disk is fine; only acking is impossible now) and
        stop leading: the entries stay pending and the next leader recovers them, skipping
        what is on disk, so nothing is written twice."""
        if self._leader:
            await asyncio.to_thread(self.sink.flush)
            self._leader = False

    async def _step(self) -> int:
        """Read, store, ack: how many entries the read brought."""
        try:
            reply: Any = await self.client.xreadgroup(
                self.group,
                self.consumer,
                {self.keys.output_stream: ">"},
                count=self.batch_size,
                block=self.block_ms,
            )
        except ResponseError as exc:
            if RoleChanged.raised_by(exc):  # turned replica under the read: wait it out
                raise RoleChanged(str(exc)) from exc
            raise
        if reply:
            await self._replicas.confirm(reply[0][1][-1][0])
            done = await asyncio.to_thread(self.sink.add, reply[0][1], False)
        else:  # the stream is idle: a buffering sink writes out what it holds
            done = await asyncio.to_thread(self.sink.flush)
        await self._ack(done)
        return len(reply[0][1]) if reply else 0

    async def _recover(self) -> None:
        """As the new leader, take every pending entry of the group (their writer is gone)
        and write what is not on disk yet, in stream order."""
        start_id = b"0-0"
        while True:
            start_id, entries, *_ = await self.client.xautoclaim(
                self.keys.output_stream,
                self.group,
                self.consumer,
                0,
                start_id,
                count=self.batch_size,
            )
            if entries:
                await self._replicas.confirm(entries[-1][0])
                log.info(
                    "%s sink: took over %d entries a previous writer left",
                    self.sink.name,
                    len(entries),
                    extra={"sink": self.sink.name, "recovered": len(entries)},
                )
                await self._ack(await asyncio.to_thread(self.sink.add, entries, True))
            if start_id == b"0-0":
                break
        await self._ack(await asyncio.to_thread(self.sink.flush))

    async def _yield_lease(self) -> None:
        if self._leader:
            await self._ack(await asyncio.to_thread(self.sink.flush))
            self._leader = False
            await self._release(keys=[self.keys.sink_lease(self.sink.name)], args=[self.consumer])

    async def _hold_lease(self) -> bool:
        # Five sixths of the lease are left at the latest renewal due, for the step
        # after it (a long Parquet write): no other worker can take the lease meanwhile.
        if self._leader and time.monotonic() < self._renew_at:
            return True
        key = self.keys.sink_lease(self.sink.name)
        renewed_at = time.monotonic()
        held = bool(await self._lease(keys=[key], args=[self.consumer, self.lease_ms]))
        self._renew_at = renewed_at + self.lease_ms / 6000 if held else 0.0
        return held

    async def _ack(self, ids: list[bytes]) -> None:
        for i in range(0, len(ids), 1000):
            await self.client.xack(self.keys.output_stream, self.group, *ids[i : i + 1000])


async def create_group(client: Redis, stream: str, group: str) -> None:
    """Create a consumer group from the stream's start (id 0, not "$": entries added before
    the first run count too); an existing group is kept."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class SinksBusy(TaggerError):
    """The running file sinks did not pause in time."""


@contextlib.contextmanager
def sinks_paused(
    client: SyncRedis, partitions: list[Keys], sinks: list[str], holder: str
) -> Iterator[None]:
    """Hold the files of `sinks` still, in every partition: the running sinks store what
    they hold, give up their lease and write nothing until the block ends (or PAUSE_MS
    passes)."""
    held: list[tuple[Keys, str]] = []
    try:
        for keys, sink in ((k, s) for k in partitions for s in sinks):
            client.set(keys.sink_pause(sink), holder, px=PAUSE_MS)
            held.append((keys, sink))
            deadline = time.monotonic() + WAIT_FOR_SINK_S
            while not client.set(keys.sink_lease(sink), holder, nx=True, px=PAUSE_MS):
                if time.monotonic() > deadline:
                    raise SinksBusy(
                        f"the {sink} sink did not pause within {WAIT_FOR_SINK_S:.0f} s; check "
                        f"that `tagger run` is healthy (or stop it) and run `tagger {holder}` again"
                    )
                time.sleep(0.1)
        yield
    finally:
        for keys, sink in held:
            client.eval(RELEASE_LUA, 1, keys.sink_lease(sink), holder)
            client.delete(keys.sink_pause(sink))
