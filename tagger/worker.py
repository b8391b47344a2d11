"""The FastStream app: a consumer-group batch subscriber that tags each batch in one call."""

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import version
from typing import Any

import orjson
from faststream import AckPolicy, FastStream
from faststream.redis import StreamSub
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from exporters import SINK_NAMES, file_sinks
from exporters.runner import SinkRunner, create_group
from schemas.control import ControlReply, SessionControlRequest
from schemas.message import A3CPMessage
from schemas.wire import DeadLetter, TaggedOutput
from tagger.batch import BatchTagger, Checked, Counts, Entry, OlderEntriesPending
from tagger.connect import make_broker
from tagger.control import handle_request
from tagger.endpoint import Endpoint, Response
from tagger.errors import (
    RETRY_DELAYS_S,
    SERVER_ERRORS,
    TRANSIENT_ERRORS,
    GroupMissing,
    WorkerFailed,
)
from tagger.health import consumer_groups, group_backlog, readiness
from tagger.keys import Keys, workers_key
from tagger.membership import beat, leave
from tagger.membership import share as membership_share
from tagger.metrics import Metrics
from tagger.raw import documented_as, raw_decoder, raw_parser
from tagger.report import BatchReport, count_fields
from tagger.retention import trim_streams
from tagger.script import SessionScript
from tagger.settings import Settings

log = logging.getLogger("tagger")
SWEEP_CHUNK = 100  # sessions closed per script call, so one call stays short
STOP_TIMEOUT_S = 30.0
STARTUP_WAIT_S = 20.0
# How long a thread may hold the GIL while another waits for it. Under a backlog the next
# batch is checked in a thread while the event loop sends the script call (~250 kB) and
# reads its reply; at Python's default 5 ms the loop can wait that long for the checking
# thread at each step. Alternating 5 ms and 0.5 ms on a 100,000-event burst (three
# pairs): script calls 23.5/26.9/29.2 ms -> 22.5/21.3/23.7 ms, 12.6-15.7k -> 15.4-16.9k
# events/s.
GIL_SWITCH_INTERVAL_S = 0.0005


async def ensure_group(client: Redis, keys: Keys) -> None:
    """Create the consumer groups from the streams' start; existing groups are kept."""
    for stream in (keys.input_stream, keys.control_stream):
        await create_group(client, stream, keys.group)


@dataclasses.dataclass(slots=True)
class Lane:
    """One partition: its keys, the session script bound to them, its batch tagger."""

    keys: Keys
    script: SessionScript
    tagger: BatchTagger


class Worker:
    """Wires the subscribers, the orphan claimer, the sweeper, the file sinks and (in burst
    mode) the drain watcher. `tag=False` runs the sinks alone, `sinks=False` the tagger."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        burst: bool = False,
        tag: bool = True,
        sinks: bool = True,
    ) -> None:
        self.settings = settings
        self.partitions = Keys.every_partition(settings)
        self.burst = burst
        self.consumer = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.counts = Counts()  # summed over every partition's batches
        self.tagging = tag
        self.sinks = [
            (keys, sink)
            for keys in (self.partitions if sinks else [])
            for sink in file_sinks(settings, keys.partition)
        ]
        self.metrics = Metrics(self.partitions, SINK_NAMES if sinks else [], tagging=tag)
        self.broker = make_broker(
            url,
            # FastStream's own lines go through the service's handler (text or JSON);
            # its per-message access lines at DEBUG only.
            logger=logging.getLogger("tagger.broker"),
            log_level=logging.DEBUG,
            graceful_timeout=30.0,
            middlewares=[RedisPrometheusMiddleware(registry=self.metrics.registry)],
            apply_types=False,  # handlers get raw entries; see tagger/raw.py
        )
        spec = AsyncAPI(
            self.broker,
            title="A3CP session tagger",
            version=version("a3cp-session-tagger"),
            description="Assigns each A3CP message to its user's session on Redis Streams.",
        )
        self.app = FastStream(self.broker, logger=log, specification=spec)
        self.endpoint = Endpoint(
            {
                "/metrics": self._metrics_page,
                "/health": self._health_page,
                "/ready": self._ready_page,
            }
        )
        self.endpoint_port: int | None = None
        self._report = BatchReport()
        self._lanes: list[Lane] = []  # by partition, once connected
        self._subscribers: dict[int, list[Any]] = {}  # partition -> its input and control
        self._tagging_share = set(range(settings.partitions))  # partitions served now
        self._sinks_share = set(range(settings.partitions))
        self._tasks: list[asyncio.Task[None]] = []
        self._sink_tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._wait_for_older_s = min(max(settings.claim_idle_ms / 10_000, 0.02), 1.0)
        self.failure: BaseException | None = None
        self.app.on_startup(self._prepare)
        self.app.after_startup(self._start_background)
        self.app.on_shutdown(self._stop_background)
        if tag:
            self._subscribe()

    def _subscribe(self) -> None:
        for keys in self.partitions:
            self._subscribe_partition(keys)

    def _subscribe_partition(self, k: Keys) -> None:
        p = k.partition

        async def handle(batch: dict[str, Any]) -> None:
            await self._handle(self._lanes[p], batch)

        async def handle_control(message: dict[str, Any]) -> None:
            await self._handle_control(self._lanes[p], message)

        self._subscribers[p] = [
            self._raw_subscriber(
                k.input_stream,
                documented_as(handle, A3CPMessage, "handle"),
                batch=True,
                max_records=self.settings.batch_size,
                title=k.input_stream,
                description="A3CPMessage JSON in entry field `data` (or FastStream's `__data__`), "
                "read by the tagger's consumer group in batches.",
            ),
            self._raw_subscriber(
                k.control_stream,
                documented_as(handle_control, SessionControlRequest, "handle_control"),
                title=k.control_stream,
                description="Explicit session start/end requests, JSON in field `data`; "
                f"each is answered on {k.control_replies}.",
            ),
        ]
        # The session script writes these streams itself (atomically with the session state);
        # the publishers only declare them, for docs/asyncapi.yaml.
        outputs = [
            (
                k.output_stream,
                TaggedOutput,
                "Tagged messages and session.start/end records, "
                "JSON in field `data`; fields user_id, session_id, kind beside it.",
            ),
            (
                k.dead_letter_stream,
                DeadLetter,
                "Refused input entries (these are the entry's "
                "fields, not JSON), each with a reason and what to fix.",
            ),
            (k.control_replies, ControlReply, "One reply per control request (entry fields)."),
        ]
        for stream, schema, description in outputs:
            self.broker.publisher(
                stream=stream, schema=schema, title=stream, description=description
            )

    def _raw_subscriber(
        self,
        stream_name: str,
        handler: Callable[..., Awaitable[None]],
        title: str,
        description: str,
        **options: Any,
    ) -> Any:
        stream = StreamSub(
            stream_name,
            group=self.settings.group,
            consumer=self.consumer,
            polling_interval=self.settings.block_ms,
            last_id=">",
            **options,
        )
        # The script acks each entry itself, atomically with its effects: MANUAL keeps
        # FastStream from acking, and the raw parser skips its JSON re-encoding.
        subscriber = self.broker.subscriber(
            stream=stream,
            parser=raw_parser,
            decoder=raw_decoder,
            ack_policy=AckPolicy.MANUAL,
            title=title,
            description=description,
        )
        subscriber(handler)
        return subscriber

    async def run(self) -> Counts:
        """Run until stopped (or, in burst mode, until the input is drained and written)."""
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        await self.app.run()
        if self.failure is not None:
            raise WorkerFailed(
                f"a background task failed ({self.failure!r}); nothing unstored was acked. "
                "Fix the cause (disk space, permissions on TAGGER_DATA_DIR, the server) "
                "and restart."
            ) from self.failure
        return self.counts

    async def _prepare(self) -> None:
        client = await self._connect_at_start()
        for keys in self.partitions:
            await ensure_group(client, keys)
            script = SessionScript(client, self.settings, keys)
            self._lanes.append(Lane(keys, script, BatchTagger(script, self.counts)))
        for keys, sink in self.sinks:
            await create_group(client, keys.output_stream, keys.sink_group(sink.name))
        await self._start_endpoint()

    async def _connect_at_start(self) -> Redis:
        """A server that is restarting is waited for (up to STARTUP_WAIT_S): a supervisor
        may well restart a worker in the middle of a server restart. One that refuses our
        certificate check will not come good by waiting, so that fails at once."""
        deadline = time.monotonic() + STARTUP_WAIT_S
        delays = itertools.chain(RETRY_DELAYS_S, itertools.repeat(RETRY_DELAYS_S[-1]))
        while True:
            try:
                client: Redis = await self.broker.connect()
                await client.ping()  # connect() alone does not reach the server
                return client
            except TRANSIENT_ERRORS as exc:
                delay_s = next(delays)
                if "CERTIFICATE" in str(exc) or time.monotonic() + delay_s > deadline:
                    raise
                log.warning("server unreachable at start (%s); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)

    async def _start_endpoint(self) -> None:
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            self.endpoint_port = await self.endpoint.start(host, port)
        except OSError as exc:
            log.warning(
                "cannot serve /metrics, /health, /ready on %s:%d (%s); this worker goes on "
                "without them. Set TAGGER_METRICS_PORT to a free port (0: any) to have them.",
                host,
                port,
                exc,
            )
            return
        log.info("metrics and health on http://%s:%d/metrics", host, self.endpoint_port)

    async def _metrics_page(self) -> Response:
        try:
            await self.metrics.refresh(await self.broker.connect())
        except (*SERVER_ERRORS, GroupMissing) as exc:
            log.warning("metrics: shared gauges not refreshed (%s)", exc)
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)

    async def _health_page(self) -> Response:
        if self.failure is not None:
            body = {"status": "failed", "error": repr(self.failure)}
            return 503, "application/json", orjson.dumps(body)
        return 200, "application/json", orjson.dumps({"status": "ok"})

    async def _ready_page(self) -> Response:
        checks = await readiness(
            await self.broker.connect(),
            self.partitions,
            tagging=self.tagging,
            sink_names=self.metrics.sink_names,
            max_sink_lag=self.settings.ready_max_sink_lag,
        )
        ready = all(c.ok for c in checks) and self.failure is None
        body = {"ready": ready, "checks": [dataclasses.asdict(c) for c in checks]}
        return (200 if ready else 503), "application/json", orjson.dumps(body)

    async def _start_background(self) -> None:
        if self.tagging:
            self._start_task(self._claim_orphans_forever(), self._tasks)
            self._start_task(self._sweep_forever(), self._tasks)
            self._start_task(self._trim_forever(), self._tasks)
        client = await self.broker.connect()
        if self.settings.partitions > 1:
            await self._balance()  # before the sinks start, so they lead only their share
            self._start_task(self._balance_forever(), self._tasks)
        for keys, sink in self.sinks:
            p = keys.partition
            runner = SinkRunner(
                client,
                self.settings,
                keys,
                sink,
                self.consumer,
                may_lead=lambda p=p: p in self._sinks_share,  # type: ignore[misc]
            )
            self._start_task(runner.run(self._stopping), self._sink_tasks)
        if self.burst:
            self._start_task(self._exit_when_drained(), self._tasks)

    def _start_task(
        self, work: Coroutine[Any, Any, None], into: list["asyncio.Task[None]"]
    ) -> None:
        task = asyncio.create_task(work)
        task.add_done_callback(self._on_task_done)
        into.append(task)

    def _on_task_done(self, task: "asyncio.Task[None]") -> None:
        # A background task that dies (a sink that cannot write, above all) stops the
        # service: running on without it would ack what nobody stored.
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task %s failed: %r", task.get_coro(), exc)
            self.failure = exc
            self.app.exit()

    async def _stop_background(self) -> None:
        # Every task stops on its own between steps: cancelling a task inside a redis-py
        # call was seen to hang shutdown. Cancel is the last resort, after a timeout.
        self._stopping.set()
        tasks = [*self._tasks, *self._sink_tasks]
        if tasks:
            _done, stuck = await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
            for task in stuck:
                log.warning("task %s did not stop in %.0f s; cancelling it", task, STOP_TIMEOUT_S)
                task.cancel()
        await self.endpoint.close()

    def _roles(self) -> list[tuple[str, bool]]:
        return [("tag", self.tagging), ("sinks", bool(self.sinks))]

    async def _balance(self) -> None:
        """Serve this worker's share of the partitions (tagger/membership.py)."""
        client = await self.broker.connect()
        ttl_ms = self.settings.sink_lease_ms
        partitions = self.settings.partitions
        for role, active in self._roles():
            if not active:
                continue
            live = await beat(client, workers_key(self.settings, role), self.consumer, ttl_ms)
            share = membership_share(live, self.consumer, partitions)
            if role == "sinks":
                self._sinks_share = share
                continue
            before, self._tagging_share = self._tagging_share, share  # read-ahead stops
            for p in sorted(before - share):
                for subscriber in self._subscribers[p]:
                    await subscriber.stop()
                await self._finish_own_pending(self._lanes[p])
            for p in sorted(share - before):
                for subscriber in self._subscribers[p]:
                    await subscriber.start()
            if share != before:
                log.info(
                    "%d workers: tagging partitions %s of %d",
                    len(live),
                    sorted(share),
                    partitions,
                    extra={"partitions": sorted(share), "workers": len(live)},
                )

    async def _finish_own_pending(self, lane: Lane) -> None:
        """Tag what this worker read from a partition it no longer serves (a read cut off
        by the stop leaves entries pending here): the next server of the partition would
        otherwise wait TAGGER_CLAIM_IDLE_MS for them."""
        while entries := await self._read(lane, "0"):  # "0": this consumer's own pending
            try:
                await self._tag_with_retry(lane, entries)
            except OlderEntriesPending:
                return  # older entries are held elsewhere: the claimer takes these later

    async def _balance_forever(self) -> None:
        client = await self.broker.connect()
        while not self._stopping.is_set():
            await self._pause(self.settings.sink_lease_ms / 3000)
            if self._stopping.is_set():
                break
            try:
                await self._balance()
            except TRANSIENT_ERRORS as exc:
                log.warning("renewing this worker's heartbeat failed (%s); will retry", exc)
        for role, active in self._roles():
            if active:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await leave(client, workers_key(self.settings, role), self.consumer)

    async def _handle(self, lane: Lane, batch: dict[str, Any]) -> None:
        """Tag the batch FastStream read, and the batches after it while entries keep
        coming, as a pipeline that keeps the server busy under a backlog: the next batch
        is read before a batch's script call and checked (in a thread) while the server
        runs that script; its own script call goes out before that one has answered, so
        the server starts it as soon as it is done with the one before. (Calls on one
        partition are applied in order all the same: a script refuses a batch while an
        older entry is pending, see _tag_in_order.) A small batch (a caught-up stream) is
        checked in the loop and sent after the call before it has answered; a steady
        stream stays in this loop rather than going through FastStream's consume path
        every few entries."""
        entries: list[Entry] = list(zip(batch["message_ids"], batch["data"], strict=True))
        checked = lane.tagger.check(entries)
        calls: list[asyncio.Task[None]] = []  # script calls in flight, oldest first
        reading: asyncio.Task[list[Entry]] | None = None
        try:
            while entries:
                reading = asyncio.create_task(self._read_ahead(lane))  # the server reads first
                if len(entries) < self.settings.batch_size:
                    # Two calls sent within a moment of each other could reach the server
                    # in either order, and a refused batch waits for its retry: a small
                    # one goes out once the call before it has answered.
                    while calls:
                        await calls.pop(0)
                before = calls[-1] if calls else None
                calls.append(
                    asyncio.create_task(self._tag_in_order(lane, entries, checked, before))
                )
                entries = await reading
                if len(entries) >= self.settings.batch_size:
                    checked = await asyncio.to_thread(lane.tagger.check, entries)
                elif entries:
                    checked = lane.tagger.check(entries)
                if len(calls) == 2:
                    await calls.pop(0)
            while calls:
                await calls.pop(0)
        finally:
            # After a failure, leave nothing running behind this handler (what a read took
            # stays pending: the claimer tags it after TAGGER_CLAIM_IDLE_MS).
            await asyncio.gather(*calls, *([reading] if reading else []), return_exceptions=True)

    async def _read_ahead(self, lane: Lane) -> list[Entry]:
        """The partition's next entries, while the worker still serves the partition (else
        they are left to its server)."""
        if self._stopping.is_set() or lane.keys.partition not in self._tagging_share:
            return []
        try:
            return await self._read(lane, ">")
        except TRANSIENT_ERRORS:
            return []  # the batch in hand goes on with its retries; FastStream reads again

    async def _read(self, lane: Lane, from_id: str) -> list[Entry]:
        """Up to a batch of the partition's input for this consumer, without blocking: new
        entries (">") or its own pending ones ("0"; deleted ones, with no fields, left out)."""
        client = await self.broker.connect()
        reply: Any = await client.xreadgroup(
            lane.keys.group,
            self.consumer,
            {lane.keys.input_stream: from_id},
            count=self.settings.batch_size,
        )
        return [(i, f) for i, f in (reply[0][1] if reply else []) if f is not None]

    async def _tag_in_order(
        self,
        lane: Lane,
        entries: list[Entry],
        checked: Checked,
        after: "asyncio.Task[None] | None" = None,
    ) -> None:
        """Tag a batch once no older entry of its partition is pending. `after`: the call
        this worker sent just before, still running when this one was sent."""
        while True:
            try:
                await self._tag_with_retry(lane, entries, checked)
                return
            except OlderEntriesPending as exc:
                if after is not None:
                    # Most likely the call before reached the server second (the two went
                    # on separate connections): go again as soon as it is done.
                    await asyncio.gather(after, return_exceptions=True)
                    after = None
                    continue
                if self._stopping.is_set():
                    return  # left pending: the next worker claims the batch
                # A consumer that died left older entries; they go first, once claimable.
                log.info("%s; waiting to claim it", exc)
                await self._pause(self._wait_for_older_s)
                await self._claim_orphans(lane)

    async def _handle_control(self, lane: Lane, message: dict[str, Any]) -> None:
        (entry_id,) = message["message_ids"]
        reply = await handle_request(
            lane.script, await self.broker.connect(), entry_id, message["data"]
        )
        self.metrics.control_done(reply.status, reply.reason)
        log.info("control %s: %s %s", reply.request_id, reply.status, reply.reason)

    async def _sweep_forever(self) -> None:
        """Close sessions idle past the timeout (wall clock), even if no event comes."""
        while not self._stopping.is_set():
            try:
                for lane in self._lanes:
                    while True:
                        closed, due = await lane.script.call("sweep", [SWEEP_CHUNK])
                        self.metrics.swept(closed)
                        if due < SWEEP_CHUNK:
                            break
            except TRANSIENT_ERRORS as exc:
                log.warning("sweeping idle sessions failed (%s); will retry", exc)
            await self._pause(self.settings.sweep_interval_ms / 1000)

    async def _trim_forever(self) -> None:
        """Keep the streams from growing without end (see tagger/retention.py)."""
        client = await self.broker.connect()
        sink_groups = {self.partitions[0].sink_group(name) for name in SINK_NAMES}
        while not self._stopping.is_set():
            await self._pause(self.settings.trim_interval_s)
            removed: dict[str, int] = {}
            try:
                for keys in self.partitions:
                    removed |= await trim_streams(
                        client,
                        keys,
                        sink_groups,
                        self.settings.retention_s * 1000,
                        int(time.time() * 1000),
                    )
            except TRANSIENT_ERRORS as exc:
                log.warning("trimming streams failed (%s); will retry", exc)
                continue
            if any(removed.values()):
                log.debug("trimmed %s", removed, extra={"trimmed": removed})

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _tag_with_retry(
        self, lane: Lane, entries: list[Entry], checked: Checked | None = None
    ) -> None:
        for delay_s in (*RETRY_DELAYS_S, None):
            try:
                started = time.perf_counter()
                counts = await lane.tagger.tag(entries, checked)
                self._batch_done(entries, counts, time.perf_counter() - started)
                return
            except TRANSIENT_ERRORS as exc:
                if delay_s is None:
                    # The entries stay pending; the claimer retries them after claim_idle_ms.
                    raise
                log.warning("server unreachable (%s); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)

    def _batch_done(self, entries: list[Entry], counts: Counts, seconds: float) -> None:
        oldest_ms = int(entries[0][0].split(b"-", 1)[0])
        wait_s = time.time() - oldest_ms / 1000
        self.metrics.batch_done(counts, len(entries), seconds, wait_s)
        log.debug(
            "batch of %d: %d tagged, %d dead, %d duplicates in %.1f ms",
            len(entries),
            counts.tagged,
            counts.dead,
            counts.duplicates,
            seconds * 1000,
            extra={
                "batch": len(entries),
                "tag_ms": round(seconds * 1000, 2),
                **count_fields(counts),
            },
        )
        self._report.add(counts, seconds)

    async def _claim_orphans_forever(self) -> None:
        interval_s = min(max(self.settings.claim_idle_ms / 2000, 0.05), 5.0)
        while not self._stopping.is_set():
            try:
                for lane in self._lanes:
                    await self._claim_orphans(lane)
            except TRANSIENT_ERRORS as exc:
                log.warning("claiming pending entries failed (%s); will retry", exc)
            await self._pause(interval_s)

    async def _claim_orphans(self, lane: Lane) -> None:
        """Tag entries left pending by a consumer that died (or by a failed batch)."""
        client = await self.broker.connect()
        start_id = b"0-0"
        while True:
            start_id, entries, *_ = await client.xautoclaim(
                lane.keys.input_stream,
                lane.keys.group,
                self.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=start_id,
                count=self.settings.batch_size,
            )
            if entries:
                log.info(
                    "claimed %d entries pending longer than TAGGER_CLAIM_IDLE_MS",
                    len(entries),
                    extra={"claimed": len(entries)},
                )
            if entries and not await self._tag_claimed(lane, client, entries):
                return  # something older is held elsewhere, or keeps failing: next round
            if start_id == b"0-0":
                return

    async def _tag_claimed(self, lane: Lane, client: Redis, entries: list[Entry]) -> bool:
        """Tag claimed entries in order; False when the round has to stop.

        The oldest entry, once delivered more than MAX_DELIVERIES times, is tried alone and,
        if it fails again, dead-lettered as `poison`: in-order tagging means one entry that
        always fails would otherwise hold up every entry after it."""
        head_id = entries[0][0]
        pending: Any = await client.xpending_range(
            lane.keys.input_stream, lane.keys.group, min=head_id, max=head_id, count=1
        )
        deliveries = int(pending[0]["times_delivered"]) if pending else 0
        if deliveries > self.settings.max_deliveries:
            try:
                await self._tag_with_retry(lane, entries[:1])
            except OlderEntriesPending:
                return False
            except Exception as exc:
                log.error("entry %s is poison (%r); dead-lettering it", head_id.decode(), exc)
                await lane.tagger.reject(
                    entries[:1],
                    "poison",
                    f"Delivered {deliveries} times and never tagged ({exc!r}); "
                    "fix the cause, then publish the event again.",
                )
            entries = entries[1:]
        if not entries:
            return True
        try:
            await self._tag_with_retry(lane, entries)
            return True
        except OlderEntriesPending:
            return False
        except Exception as exc:
            log.error("claimed batch failed (%r); trying its entries one by one", exc)
        for entry in entries:
            try:
                await self._tag_with_retry(lane, [entry])
            except OlderEntriesPending:
                return False
            except Exception as exc:
                log.error("entry %s failed (%r); it stays pending", entry[0].decode(), exc)
                return False
        return True

    async def _exit_when_drained(self) -> None:
        client = await self.broker.connect()
        groups = consumer_groups(self.partitions, self.tagging, self.metrics.sink_names)
        while not self._stopping.is_set():
            try:
                if all([await group_backlog(client, s, g) == (0, 0) for s, g in groups]):
                    self.app.exit()
                    return
            except TRANSIENT_ERRORS as exc:
                log.warning("checking the backlog failed (%s); will retry", exc)
            await self._pause(0.05)
