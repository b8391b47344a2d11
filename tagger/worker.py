"""The FastStream app: a consumer-group batch subscriber that tags each batch in one call."""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from faststream import AckPolicy, FastStream
from faststream.message import StreamMessage
from faststream.redis import RedisBroker, StreamSub
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from exporters import file_sinks
from exporters.runner import SinkRunner, create_group
from tagger.batch import BatchTagger, Counts, Entry, OlderEntriesPending
from tagger.control import handle_request
from tagger.errors import GroupMissing, WorkerFailed
from tagger.keys import Keys
from tagger.script import SessionScript
from tagger.settings import Settings

log = logging.getLogger("tagger")
_RETRY_DELAYS_S = (0.1, 0.5, 1.0, 2.0, 5.0)
_TRANSIENT = (redis_errors.ConnectionError, redis_errors.TimeoutError)
SWEEP_CHUNK = 100  # sessions closed per script call, so one call stays short
STOP_TIMEOUT_S = 30.0


async def ensure_group(client: Redis, keys: Keys) -> None:
    """Create the consumer groups from the streams' start; existing groups are kept."""
    for stream in (keys.input_stream, keys.control_stream):
        await create_group(client, stream, keys.group)


async def check_group(client: Redis, keys: Keys) -> None:
    """Raise GroupMissing unless the consumer group exists on the input stream."""
    try:
        groups = await client.xinfo_groups(keys.input_stream)
    except redis_errors.ResponseError:
        groups = []
    if not any(g["name"].decode() == keys.group for g in groups):
        raise GroupMissing(
            f"Consumer group '{keys.group}' does not exist on stream '{keys.input_stream}'; "
            "start the tagger once (`tagger run`) to create it."
        )


async def backlog(client: Redis, stream: str, group_name: str) -> tuple[int, int]:
    """(entries never delivered to the group, entries delivered but not acked)."""
    for group in await client.xinfo_groups(stream):
        if group["name"].decode() == group_name:
            lag = group.get("lag")
            if lag is None:  # Redis cannot tell after some deletions; compare ids instead
                info = await client.xinfo_stream(stream)
                lag = int(info["last-generated-id"] != group["last-delivered-id"])
            return int(lag), int(group["pending"])
    raise GroupMissing(f"Consumer group '{group_name}' on '{stream}' vanished; restart the tagger.")


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
        self.keys = Keys.from_settings(settings)
        self.burst = burst
        self.consumer = settings.consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.counts = Counts()
        self.broker = RedisBroker(url, log_level=logging.DEBUG, graceful_timeout=30.0)
        self.app = FastStream(self.broker, logger=log)
        self._tagger: BatchTagger | None = None
        self._script: SessionScript | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sink_tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._wait_for_older_s = min(max(settings.claim_idle_ms / 10_000, 0.02), 1.0)
        self.tagging = tag
        self.sinks = file_sinks(settings) if sinks else []
        self.failure: BaseException | None = None
        self.app.on_startup(self._prepare)
        self.app.after_startup(self._start_background)
        self.app.on_shutdown(self._stop_background)
        if tag:
            self._subscribe()

    def _subscribe(self) -> None:
        self._raw_subscriber(
            self.keys.input_stream, self._handle, batch=True, max_records=self.settings.batch_size
        )
        self._raw_subscriber(self.keys.control_stream, self._handle_control)

    def _raw_subscriber(
        self, stream_name: str, handler: Callable[..., Awaitable[None]], **options: Any
    ) -> None:
        stream = StreamSub(
            stream_name,
            group=self.keys.group,
            consumer=self.consumer,
            polling_interval=self.settings.block_ms,
            last_id=">",
            **options,
        )
        # The script acks each entry itself, atomically with its effects: MANUAL keeps
        # FastStream from acking, and the raw parser skips its JSON re-encoding.
        self.broker.subscriber(
            stream=stream, parser=_raw_parser, decoder=_raw_decoder, ack_policy=AckPolicy.MANUAL
        )(handler)

    async def run(self) -> Counts:
        """Run until stopped (or, in burst mode, until the input is drained and written)."""
        await self.app.run()
        if self.failure is not None:
            raise WorkerFailed(
                f"a background task failed ({self.failure!r}); nothing unstored was acked. "
                "Fix the cause (disk space, permissions on TAGGER_DATA_DIR, the server) "
                "and restart."
            ) from self.failure
        return self.counts

    async def _prepare(self) -> None:
        client = await self.broker.connect()
        await ensure_group(client, self.keys)
        for sink in self.sinks:
            await create_group(client, self.keys.output_stream, self.keys.sink_group(sink.name))
        self._script = SessionScript(client, self.settings)
        self._tagger = BatchTagger(self._script)
        self.counts = self._tagger.counts

    async def _start_background(self) -> None:
        if self.tagging:
            self._start_task(self._claim_orphans_forever(), self._tasks)
            self._start_task(self._sweep_forever(), self._tasks)
        client = await self.broker.connect()
        for sink in self.sinks:
            runner = SinkRunner(client, self.settings, sink, self.consumer)
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

    async def _handle(self, batch: dict[str, Any]) -> None:
        entries = list(zip(batch["message_ids"], batch["data"], strict=True))
        while True:
            try:
                await self._tag_with_retry(entries)
                return
            except OlderEntriesPending as exc:
                if self._stopping.is_set():
                    return  # left pending: the next worker claims the batch
                # A consumer that died left older entries; they go first, once claimable.
                log.info("%s; waiting to claim it", exc)
                await self._pause(self._wait_for_older_s)
                await self._claim_orphans()

    async def _handle_control(self, message: dict[str, Any]) -> None:
        assert self._script is not None
        (entry_id,) = message["message_ids"]
        reply = await handle_request(
            self._script, await self.broker.connect(), entry_id, message["data"]
        )
        log.info("control %s: %s %s", reply.request_id, reply.status, reply.reason)

    async def _sweep_forever(self) -> None:
        """Close sessions idle past the timeout (wall clock), even if no event comes."""
        assert self._script is not None
        while not self._stopping.is_set():
            try:
                while True:
                    _closed, due = await self._script.call("sweep", [SWEEP_CHUNK])
                    if due < SWEEP_CHUNK:
                        break
            except _TRANSIENT as exc:
                log.warning("sweeping idle sessions failed (%s); will retry", exc)
            await self._pause(self.settings.sweep_interval_ms / 1000)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the worker is stopping."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _tag_with_retry(self, entries: list[Entry]) -> None:
        assert self._tagger is not None
        for delay_s in (*_RETRY_DELAYS_S, None):
            try:
                await self._tagger.tag(entries)
                return
            except _TRANSIENT as exc:
                if delay_s is None:
                    # The entries stay pending; the claimer retries them after claim_idle_ms.
                    raise
                log.warning("server unreachable (%s); retrying in %.1f s", exc, delay_s)
                await asyncio.sleep(delay_s)

    async def _claim_orphans_forever(self) -> None:
        interval_s = min(max(self.settings.claim_idle_ms / 2000, 0.05), 5.0)
        while not self._stopping.is_set():
            try:
                await self._claim_orphans()
            except _TRANSIENT as exc:
                log.warning("claiming pending entries failed (%s); will retry", exc)
            await self._pause(interval_s)

    async def _claim_orphans(self) -> None:
        """Tag entries left pending by a consumer that died (or by a failed batch)."""
        client = await self.broker.connect()
        start_id = b"0-0"
        while True:
            start_id, entries, *_ = await client.xautoclaim(
                self.keys.input_stream,
                self.keys.group,
                self.consumer,
                min_idle_time=self.settings.claim_idle_ms,
                start_id=start_id,
                count=self.settings.batch_size,
            )
            if entries and not await self._tag_claimed(client, entries):
                return  # something older is held elsewhere, or keeps failing: next round
            if start_id == b"0-0":
                return

    async def _tag_claimed(self, client: Redis, entries: list[Entry]) -> bool:
        """Tag claimed entries in order; False when the round has to stop.

        The oldest entry, once delivered more than MAX_DELIVERIES times, is tried alone and,
        if it fails again, dead-lettered as `poison`: in-order tagging means one entry that
        always fails would otherwise hold up every entry after it."""
        assert self._tagger is not None
        head_id = entries[0][0]
        pending: Any = await client.xpending_range(
            self.keys.input_stream, self.keys.group, min=head_id, max=head_id, count=1
        )
        deliveries = int(pending[0]["times_delivered"]) if pending else 0
        if deliveries > self.settings.max_deliveries:
            try:
                await self._tag_with_retry(entries[:1])
            except OlderEntriesPending:
                return False
            except Exception as exc:
                log.error("entry %s is poison (%r); dead-lettering it", head_id.decode(), exc)
                await self._tagger.reject(
                    entries[:1],
                    "poison",
                    f"Delivered {deliveries} times and never tagged ({exc!r}); "
                    "fix the cause, then publish the event again.",
                )
            entries = entries[1:]
        if not entries:
            return True
        try:
            await self._tag_with_retry(entries)
            return True
        except OlderEntriesPending:
            return False
        except Exception as exc:
            log.error("claimed batch failed (%r); trying its entries one by one", exc)
        for entry in entries:
            try:
                await self._tag_with_retry([entry])
            except OlderEntriesPending:
                return False
            except Exception as exc:
                log.error("entry %s failed (%r); it stays pending", entry[0].decode(), exc)
                return False
        return True

    async def _exit_when_drained(self) -> None:
        client = await self.broker.connect()
        groups = []
        if self.tagging:
            groups += [(self.keys.input_stream, self.keys.group)]
            groups += [(self.keys.control_stream, self.keys.group)]
        groups += [(self.keys.output_stream, self.keys.sink_group(s.name)) for s in self.sinks]
        while not self._stopping.is_set():
            if all([await backlog(client, stream, group) == (0, 0) for stream, group in groups]):
                self.app.exit()
                return
            await self._pause(0.05)


async def _raw_parser(msg: Any, _original: Callable[..., Awaitable[Any]]) -> StreamMessage[Any]:
    return StreamMessage(raw_message=msg, body=b"", headers={}, path={}, message_id="")


async def _raw_decoder(msg: StreamMessage[Any], _original: Callable[..., Awaitable[Any]]) -> Any:
    return msg.raw_message
