"""The FastStream app: partition owners tagging their input, the file sinks, one tick
for the housekeeping (membership and leases, idle sessions, trimming)."""

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from importlib.metadata import version
from typing import Any, TypeVar

import orjson
from faststream import FastStream
from faststream.redis.prometheus import RedisPrometheusMiddleware
from faststream.specification import AsyncAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis

from exporters import SINK_NAMES, file_sinks
from exporters.runner import SinkRunner, create_group
from tagger.connect import make_broker, pause
from tagger.endpoint import Endpoint, Response
from tagger.errors import (
    REFUSING_WRITES,
    RETRY_DELAYS_S,
    SERVER_ERRORS,
    TRANSIENT_ERRORS,
    GroupMissing,
    WorkerFailed,
    transient_advice,
)
from tagger.health import Check, consumer_groups, group_backlog, readiness
from tagger.keys import Keys, workers_key
from tagger.logs import log_every_task
from tagger.membership import beat, leave
from tagger.membership import share as membership_share
from tagger.metrics import Metrics
from tagger.retention import trim_streams
from tagger.rules import Counts
from tagger.runtime.owner import Fenced, PartitionOwner
from tagger.runtime.path import TagPath
from tagger.runtime.sinks_process import SinksProcess
from tagger.runtime.streams import Subscriber, declare_partition
from tagger.settings import Settings

log = logging.getLogger("tagger")
T = TypeVar("T")
STOP_TIMEOUT_S = 30.0
# How long a thread may hold the GIL while another waits for it: a large batch is checked
# in a thread while the event loop talks to the server (measured in the previous release:
# 0.5 ms instead of Python's 5 ms gave 12.6-15.7k -> 15.4-16.9k events/s on a burst).
GIL_SWITCH_INTERVAL_S = 0.0005


async def ensure_group(client: Redis, keys: Keys) -> None:
    """Create the consumer groups from the streams' start; existing groups are kept."""
    for stream in (keys.input_stream, keys.control_stream):
        await create_group(client, stream, keys.group)


class Worker:
    """`tag=False` runs the sinks alone, `sinks=False` the owners alone; `burst` exits once
    the input is drained and written. `sinks_process`: the file sinks run there instead
    (`tagger run --sinks-only`, see tagger/runtime/sinks_process.py): this worker watches
    it, and reports and waits for its sinks as if they were its own."""

    def __init__(
        self, settings: Settings, url: str, *, burst: bool = False, tag: bool = True,
        sinks: bool = True, sinks_process: SinksProcess | None = None,
    ) -> None:  # fmt: skip
        self.settings = settings
        self.partitions = Keys.every_partition(settings)
        self.burst, self.tagging = burst, tag
        self.consumer = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.sinks = [
            (keys, sink)
            for keys in (self.partitions if sinks else [])
            for sink in file_sinks(settings, keys.partition)
        ]
        self.sinks_process = sinks_process
        watched = sinks or sinks_process is not None
        self.metrics = Metrics(self.partitions, SINK_NAMES if watched else [], tagging=tag)
        self.broker = make_broker(
            url,
            block_ms=settings.block_ms,
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
        self._owners: list[PartitionOwner] = []  # by partition, once connected
        # partition -> the real start of its input and control subscribers: they read only
        # while this worker owns the partition (the broker's start of them does nothing).
        self._subscribers: dict[int, list[Subscriber]] = {}
        self._sinks_share = set(range(settings.partitions))
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.path = TagPath(settings, self.metrics, self._stopping)
        self.counts = self.path.counts  # summed over every partition's batches
        self.failure: BaseException | None = None
        self.app.on_startup(self._prepare)
        self.app.after_startup(self._start_background)
        self.app.on_shutdown(self._stop_background)
        if tag:
            for keys in self.partitions:
                self._subscribe(keys)

    def _subscribe(self, k: Keys) -> None:
        p = k.partition

        async def handle(batch: dict[str, Any]) -> None:
            await self.path.handle(self._owners[p], batch)

        async def handle_control(message: dict[str, Any]) -> None:
            # One entry at a time (not a batch): its fields come as one dict.
            (entry_id,), fields = message["message_ids"], message["data"]
            await self.path.serve(self._owners[p], self.path.control_step(entry_id, fields))

        self._subscribers[p] = declare_partition(
            self.broker, self.settings, self.consumer, k, handle, handle_control
        )

    async def run(self) -> Counts:
        """Run until stopped (or, in burst mode, until the input is drained and written)."""
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        with contextlib.suppress(ValueError, RuntimeError):  # not the main thread: no dump
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_every_task)
        await self.app.run()
        if self.failure is not None:
            raise WorkerFailed(
                f"a background task failed ({self.failure!r}); nothing unstored was acked. "
                "Fix the cause (disk space, permissions on TAGGER_DATA_DIR, the server) "
                "and restart."
            ) from self.failure
        return self.counts

    async def _prepare(self) -> None:
        client = await self._wait_for_server(self._connect, "at start")
        for keys in self.partitions:
            self._owners.append(PartitionOwner(client, self.settings, keys, self.consumer))
        await self._start_endpoint()

    async def _connect(self) -> Redis:
        """Connect and create the consumer groups."""
        client: Redis = await self.broker.connect()
        await client.ping()  # connect() alone does not reach the server
        for keys in self.partitions:
            await ensure_group(client, keys)
            # (A sinks process of ours creates these too: whichever comes first.)
            for name in self.metrics.sink_names:
                await create_group(client, keys.output_stream, keys.sink_group(name))
        return client

    async def _wait_for_server(self, step: Callable[[], Awaitable[T]], when: str) -> T:
        """Run a step of the start, waiting out a server that cannot be reached (a
        restart, a failover, a network partition) or refuses writes, with backoff, until
        the step is done or the worker is stopped: a supervisor may well (re)start a worker
        in the middle of an outage, and exiting would only make it try again blind. The
        server may go away between two steps, so each is waited for on its own. A server
        that refuses our certificate check or our credentials will not come good by
        waiting, so those fail at once."""
        delays = itertools.chain(RETRY_DELAYS_S, itertools.repeat(RETRY_DELAYS_S[-1]))
        since = time.monotonic()
        while True:
            try:
                done = await step()
                if time.monotonic() - since > 1:
                    log.info("server reached after %.0f s; starting", time.monotonic() - since)
                return done
            except TRANSIENT_ERRORS as exc:
                if "CERTIFICATE" in str(exc):
                    raise
                self.path.note_refusal(exc)  # /ready says so meanwhile
                delay_s = next(delays)
                why = (
                    transient_advice(exc)
                    if isinstance(exc, REFUSING_WRITES)
                    else f"server unreachable {when} ({exc}); check TAGGER_REDIS_URL, the network"
                )
                log.warning(
                    "%s; retrying in %.1f s (waiting %.0f s so far; or stop with SIGTERM)",
                    why, delay_s, time.monotonic() - since,
                )  # fmt: skip
                await asyncio.sleep(delay_s)

    async def _start_endpoint(self) -> None:
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            self.endpoint_port = await self.endpoint.start(host, port)
        except OSError as exc:
            log.warning(
                "cannot serve /metrics, /health, /ready on %s:%d (%s); this worker goes on "
                "without them. Set TAGGER_METRICS_PORT to a free port (0: any) to have them.",
                host, port, exc,
            )  # fmt: skip
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
            max_input_lag=self.settings.ready_max_input_lag,
        )
        if self.path.refusing_writes is not None:
            checks.append(Check("writes", False, self.path.refusing_writes))
        ready = all(c.ok for c in checks) and self.failure is None
        body = {"ready": ready, "checks": [dataclasses.asdict(c) for c in checks]}
        return (200 if ready else 503), "application/json", orjson.dumps(body)

    # -- background: one tick, the sinks, the drain watcher ---------------------------

    async def _start_background(self) -> None:
        client = await self.broker.connect()
        # Before the sinks start, so they lead only their share.
        await self._wait_for_server(self._balance, "while starting")
        self._start_task(self._tick_forever())
        for keys, sink in self.sinks:
            p = keys.partition
            runner = SinkRunner(
                client, self.settings, keys, sink, self.consumer,
                may_lead=lambda p=p: p in self._sinks_share,  # type: ignore[misc]
            )  # fmt: skip
            self._start_task(runner.run(self._stopping))
        if self.burst:
            self._start_task(self._exit_when_drained())
        if self.sinks_process is not None:
            self._start_task(self.sinks_process.watch(self._stopping))

    def _start_task(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

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
        if self._tasks:
            _done, stuck = await asyncio.wait(self._tasks, timeout=STOP_TIMEOUT_S)
            for task in stuck:
                log.warning("task %s did not stop in %.0f s; cancelling it", task, STOP_TIMEOUT_S)
                task.cancel()
        await self.endpoint.close()

    async def _tick_forever(self) -> None:
        """The housekeeping, one step a tick: heartbeat and leases, idle sessions, trim."""
        s = self.settings
        tick_s = min(s.sweep_interval_ms / 1000, s.sink_lease_ms / 3000, 0.5)
        next_trim = time.monotonic() + s.trim_interval_s
        while not self._stopping.is_set():
            await pause(self._stopping, tick_s)
            if self._stopping.is_set():
                break
            try:
                await self._balance()  # writes the heartbeat: the server takes writes
                self.path.refusing_writes = None
                for owner in self._owners:
                    if owner.epoch is not None and owner.needs_recovery:
                        # No new entry may come to start it (a producer waiting on us):
                        # pending entries of an owner that needs recovery are tagged here.
                        await self.path.serve(owner, None)
                    elif owner.epoch is not None:
                        self.metrics.swept(await owner.sweep())
                if time.monotonic() >= next_trim:
                    next_trim = time.monotonic() + s.trim_interval_s
                    await self._trim()
            except Fenced as exc:
                log.warning("%s", exc)
            except TRANSIENT_ERRORS as exc:
                # Idle, a worker learns here that the server refuses writes: /ready says so.
                self.path.note_refusal(exc)
                log.warning("housekeeping failed (%s); will retry", transient_advice(exc))
        client = await self.broker.connect()
        with contextlib.suppress(*TRANSIENT_ERRORS):
            for role, active in self._roles():
                if active:
                    await leave(client, workers_key(self.settings, role), self.consumer)
            for owner in self._owners:
                if owner.epoch is not None:
                    await owner.release()

    def _roles(self) -> list[tuple[str, bool]]:
        return [("tag", self.tagging), ("sinks", bool(self.sinks))]

    async def _balance(self) -> None:
        """Own this worker's share of the partitions (tagger/membership.py): take or renew
        their leases, recover a newly owned one before reading it, let go of the rest."""
        client = await self.broker.connect()
        for role, active in self._roles():
            if not active:
                continue
            live = await beat(client, workers_key(self.settings, role), self.consumer,
                              self.settings.sink_lease_ms)  # fmt: skip
            share = membership_share(live, self.consumer, self.settings.partitions)
            if role == "sinks":
                self._sinks_share = share
                continue
            before = self._read_partitions()
            for owner in self._owners:
                p = owner.keys.partition
                if p in share and await owner.hold():
                    if not owner.reading and await self.path.serve(owner, None):
                        await self._read_partition(p, True)
                elif owner.reading or owner.epoch is not None:
                    await self._read_partition(p, False)
                    if owner.epoch is not None:
                        await owner.release()
            if (reading := self._read_partitions()) != before:
                log.info(
                    "%d workers: tagging partitions %s of %d",
                    len(live), reading, self.settings.partitions,
                    extra={"partitions": reading, "workers": len(live)},
                )  # fmt: skip

    async def _read_partition(self, p: int, on: bool) -> None:
        # Set first: a handler in the middle of a backlog stops reading ahead at once
        # (stopping a subscriber waits for its handler, which would go on to the end).
        self._owners[p].reading = on
        for subscriber, real_start in self._subscribers[p]:
            await (real_start() if on else subscriber.stop())

    def _read_partitions(self) -> list[int]:
        return [o.keys.partition for o in self._owners if o.reading]

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
            await pause(self._stopping, 0.05)

    async def _trim(self) -> None:
        """Keep the streams from growing without end (see tagger/retention.py)."""
        client = await self.broker.connect()
        sink_groups = {self.partitions[0].sink_group(name) for name in SINK_NAMES}
        now_ms = int(time.time() * 1000)
        removed: dict[str, int] = {}
        for keys in self.partitions:
            removed |= await trim_streams(
                client, keys, sink_groups, self.settings.retention_s * 1000, now_ms
            )
            # Dedup marks past the window (the commit ignores them; this frees them).
            await client.zremrangebyscore(
                keys.dedup, "-inf", now_ms - self.settings.dedup_window_s * 1000
            )
        if any(removed.values()):
            log.debug("trimmed %s", removed, extra={"trimmed": removed})
