"""The owner of one partition: its active sessions in memory, its input read in order,
each batch's effects committed at once under the owner's fencing epoch.

One worker owns a partition at a time: it holds the partition's lease (a key with a TTL,
renewed by the worker's tick) and the epoch it raised when it took the lease. Whoever
takes the lease next raises the epoch, so a commit of a worker that lost its partition
(a stall past the lease, a network partition) is refused whole: it cannot write.

Guarantees the previous release's in-order gate gave, and what gives them now:
- order within a partition: one reader, the owner; a new owner first claims every entry
  still pending in the group and tags them (its own pending, in id order) before new
  ones; and a commit is refused while an older entry is pending (one a worker that lost
  the partition read after the new owner took over), which the owner then claims first.
- nothing tagged twice when a stalled consumer wakes: it cannot commit (epoch), and
  after an ambiguous failure (the connection dropped during a commit) the owner reloads
  its state and re-reads its own pending entries: what was committed is acked, so gone."""

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from exporters.runner import RELEASE_LUA
from tagger.errors import TaggerError
from tagger.intake import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    Accepted,
    Rejected,
    check_entry,
    payload_of,
    without_bytes,
)
from tagger.keys import Keys, partition_of
from tagger.rules import (
    ControlRequest,
    CounterNames,
    Counts,
    Limits,
    Outcome,
    SessionState,
    Span,
    control,
    decode_state,
    needs_history,
    sweep,
    tag,
)
from tagger.rules.sessions import LATE_CANDIDATES
from tagger.rules.state import registry_counts, state_version
from tagger.runtime.commit import Commit, Refused, build_commit
from tagger.runtime.transaction import CommitForms
from tagger.settings import Settings

log = logging.getLogger("tagger")
Entry = tuple[bytes, dict[bytes, bytes]]
SWEEP_CHUNK = 100  # sessions closed per commit, so one commit stays short

# Take the lease when free: a new epoch. Renew it when ours: the current epoch.
ACQUIRE_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {0, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
if holder then return {-1, 0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, redis.call('INCR', KEYS[2])}
"""


class Fenced(TaggerError):
    """Another worker owns the partition now; this one must stop serving it."""


class CorruptState(TaggerError):
    """A key the batch writes holds a foreign value; the batch was not applied."""


class Checked:
    """A batch validated (no server involved; safe in a thread)."""

    __slots__ = ("accepted", "entries", "rejected")

    def __init__(
        self, keys: Keys, entries: Sequence[Entry], max_clock_skew_s: int = DEFAULT_MAX_CLOCK_SKEW_S
    ) -> None:
        self.entries = entries
        self.accepted: list[Accepted] = []
        self.rejected: list[Rejected] = []
        for entry_id, fields in entries:
            result = check_entry(entry_id, fields, max_clock_skew_s=max_clock_skew_s)
            if isinstance(result, Accepted) and not keys.owns(result.user_id):
                result = _misrouted(keys, result, payload_of(fields) or b"")
            if isinstance(result, Accepted):
                self.accepted.append(result)
            else:
                self.rejected.append(result)


def _misrouted(keys: Keys, event: Accepted, raw: bytes) -> Rejected:
    # Tagging it here would give the user sessions in two partitions at once.
    right = partition_of(event.user_id, keys.partitions)
    detail = (
        f"user_id {event.user_id!r} belongs to partition {right} of {keys.partitions} "
        f"(crc32(user_id) mod {keys.partitions}), not {keys.partition}; publish it to that "
        "partition's input stream (`tagger publish` and tagger.publish.publish_event route "
        "by user)."
    )
    return Rejected(event.entry_id, "wrong_partition", detail, raw)


class PartitionOwner:
    """Acquire, load, then `tag` batches, `control` requests and `sweep` idle sessions."""

    def __init__(
        self, client: Redis, settings: Settings, keys: Keys, consumer: str, script: bool = False
    ) -> None:
        self.client, self.settings, self.keys, self.consumer = client, settings, keys, consumer
        self.limits = Limits(settings.session_timeout_s * 1000, settings.max_session_s * 1000)
        self.epoch: int | None = None  # None: not the owner
        self.states: dict[str, SessionState] = {}
        self.names = CounterNames()
        self.lock = asyncio.Lock()  # one batch, request or sweep of the partition at a time
        self.needs_recovery = True  # load state and tag pending entries before new ones
        self.reading = False  # the worker reads its input (set by the worker, see _balance)
        self.failures: dict[bytes, int] = {}  # entry id -> failed tries alone (poison)
        # One recovery at a time (the input and the control handler may both need one);
        # `recoveries` tells a handler that one ran, and tagged its entries, meanwhile.
        self.recovery_lock = asyncio.Lock()
        self.recoveries = 0
        # `script`: every batch with the script (bench.instructions compares the forms).
        self._commit = CommitForms(client, keys, script_only=script or settings.cluster)
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._release = client.register_script(RELEASE_LUA)

    # -- ownership -------------------------------------------------------------------

    async def hold(self) -> bool:
        """Take or renew the partition's lease; False while another worker holds it."""
        args: list[str | int] = [self.consumer, self.settings.sink_lease_ms]
        kind, epoch = await self._acquire(keys=[self.keys.owner, self.keys.epoch], args=args)
        if kind < 0:
            self.drop()
            return False
        if epoch != self.epoch:  # newly ours (or ours from before a restart): load first
            self.epoch, self.needs_recovery = int(epoch), True
        return True

    async def release(self) -> None:
        await self._release(keys=[self.keys.owner], args=[self.consumer])
        self.drop()

    def drop(self) -> None:
        self.epoch, self.needs_recovery = None, True
        self.states.clear()

    async def load(self) -> None:
        """The partition's active sessions and counter names, from the server; states of
        earlier versions are converted as they are next written."""
        async with self.lock:  # no batch or request may run on half-loaded state
            await self._load()

    async def _load(self) -> None:
        k = self.keys
        raw_states: Any = await self.client.hgetall(k.active)
        raw_names: Any = await self.client.hgetall(k.counter_names)
        self.names = CounterNames.from_hash(raw_names)
        self.states = {}
        old: list[tuple[str, bytes]] = []
        for user_b, packed in raw_states.items():
            if state_version(packed) == 4:
                self.states[user_b.decode()] = decode_state(packed)
            else:
                old.append((user_b.decode(), packed))
        if old:
            await self._load_old(old)

    async def _load_old(self, old: list[tuple[str, bytes]]) -> None:
        # Earlier versions kept the deadline in a sorted set and the start metadata (and,
        # the text form, the counters) in the registry hash only.
        now_ms = int(time.time() * 1000)
        sids = [decode_state(packed).sid for _, packed in old]
        async with self.client.pipeline(transaction=False) as pipe:
            for sid in sids:
                pipe.zscore(self.keys.deadlines, sid)
                pipe.hgetall(self.keys.session(sid))
            replies = await pipe.execute()
        for n, (user, packed) in enumerate(old):
            deadline, registry = replies[2 * n], replies[2 * n + 1]
            default = now_ms + self.limits.timeout_ms
            s = decode_state(packed, int(deadline) if deadline is not None else default)
            if state_version(packed) == 1:
                s.named = registry_counts(registry)
            s.meta = {
                k: v
                for k, v in {
                    "session_notes": registry.get(b"session_notes", b"").decode(),
                    "is_training_data": registry.get(b"is_training_data") == b"true",
                    "training_intent_label": registry.get(b"training_intent_label", b"").decode(),
                }.items()
                if v
            }
            self.states[user] = s

    # -- tagging ---------------------------------------------------------------------

    async def tag(self, checked: Checked) -> Counts:
        """Tag one checked batch (stream order) and commit it; raises Fenced, CorruptState,
        Refused('older') or a server error, having changed nothing it knows of."""
        async with self.lock:
            return await self._tag(checked)

    async def _tag(self, checked: Checked) -> Counts:
        known: set[str] = set()
        history = await self._history(needs_history(checked.accepted, self.states, self.limits))
        while True:
            now_ms = int(time.time() * 1000)
            outcome = tag(
                checked.accepted, self.states, history, self.names, self.limits, now_ms, known
            )
            outcome.acked += [r.entry_id for r in checked.rejected]
            dead = [r.stream_fields() for r in checked.rejected]
            commit = build_commit(
                self.keys, outcome, self.names, now_ms, dead, checked.entries[0][0]
            )
            try:
                await self._apply(commit, outcome, now_ms)
            except Refused as exc:
                if exc.why != "duplicates":
                    raise
                known |= {d.decode() for d in exc.detail}  # tagged before: dropped this time
                continue
            counts = outcome.counts
            counts.dead = len(checked.rejected)
            for r in checked.rejected:
                counts.dead_by_reason[r.reason] = counts.dead_by_reason.get(r.reason, 0) + 1
            return counts

    async def reject(self, entries: Sequence[Entry], reason: str, detail: str) -> None:
        """Dead-letter entries as they are (hash and length kept, not the bytes)."""
        async with self.lock:
            outcome = Outcome(acked=[i for i, _ in entries])
            dead = [
                without_bytes(i, payload_of(f) or b"", reason, detail).stream_fields()
                for i, f in entries
            ]
            now_ms = int(time.time() * 1000)
            commit = build_commit(self.keys, outcome, self.names, now_ms, dead, entries[0][0])
            await self._apply(commit, outcome, now_ms)

    async def _apply(self, commit: Commit, outcome: Outcome, now_ms: int) -> None:
        """Commit; on success the outcome becomes the owner's memory. On any failure the
        new counter numbers are forgotten, and after an error that leaves it unknown
        whether the commit applied, the owner reloads before its next batch."""
        if self.epoch is None:
            raise Fenced(f"partition {self.keys.partition} is not owned here")
        try:
            window_ms = self.settings.dedup_window_s * 1000
            await self._commit.apply(commit, self.epoch, now_ms - window_ms)
        except Refused as exc:
            self.names.forget_added()
            if exc.why == "fenced":
                stale = self.epoch
                self.drop()
                raise Fenced(
                    f"partition {self.keys.partition} was taken over (epoch {stale} is "
                    "stale); this worker stops serving it until it holds the lease again"
                ) from exc
            if exc.why == "type":
                raise CorruptState(
                    f"key {exc.detail[0].decode()} holds the wrong type of value, so nothing "
                    "of this batch was applied; inspect it (TYPE, then DEL if it is not "
                    "the tagger's)"
                ) from exc
            raise
        except BaseException:
            self.names.forget_added()
            self.needs_recovery = True
            raise
        self.names.added.clear()
        for user, state in outcome.states.items():
            if state is None:
                self.states.pop(user, None)
            else:
                self.states[user] = state

    async def _history(self, users: list[str]) -> dict[str, list[Span]]:
        """The latest sessions of `users`, newest first, as their registry has them."""
        if not users:
            return {}
        k = self.keys
        async with self.client.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.zrevrange(k.user_sessions(user), 0, LATE_CANDIDATES - 1, withscores=True)
            latest: list[Any] = await pipe.execute()
            sids = [sid.decode() for found in latest for sid, _ in found]
            for sid in sids:
                pipe.hmget(k.session(sid), ["start_ms", "first_event_ms", "last_event_ms", "seq"])
            figures = iter(await pipe.execute())
        history: dict[str, list[Span]] = {}
        for user, found in zip(users, latest, strict=True):
            spans = history[user] = []
            for sid_b, start in found:
                start_b, first_b, last_b, seq_b = next(figures)
                spans.append(
                    Span(
                        sid_b.decode(),
                        int(start_b) if start_b is not None else int(start),
                        int(first_b) if first_b is not None else -1,
                        int(last_b) if last_b is not None else -1,
                        int(seq_b) if seq_b is not None else 0,
                    )
                )
        return history

    # -- control and sweep -----------------------------------------------------------

    async def control(self, entry_id: bytes, request: ControlRequest) -> tuple[str, str, str]:
        """Apply a start, end or note request; its reply and its ack go in one commit."""
        async with self.lock:
            registry = None
            if request.action in ("end", "note"):
                found: Any = await self.client.hmget(
                    self.keys.session(request.session_id), ["user_id", "status"]
                )
                if found[0] is not None:
                    registry = (found[0].decode(), (found[1] or b"").decode())
            now_ms = int(time.time() * 1000)
            outcome, answer = control(
                request, self.states, registry, self.names, self.limits, now_ms
            )
            status, sid, reason = answer
            reply = {"request_id": request.request_id, "status": status,
                     "session_id": sid, "reason": reason}  # fmt: skip
            commit = build_commit(
                self.keys, outcome, self.names, now_ms, acked_controls=[entry_id], replies=[reply]
            )
            await self._apply(commit, outcome, now_ms)
            return answer

    async def answer(self, entry_id: bytes, request_id: str, reason: str) -> None:
        """Refuse a request (invalid, expired): its ack and the reply, together."""
        async with self.lock:
            reply = {"request_id": request_id, "status": "error", "session_id": "",
                     "reason": reason}  # fmt: skip
            outcome, now_ms = Outcome(), int(time.time() * 1000)
            commit = build_commit(
                self.keys, outcome, self.names, now_ms, acked_controls=[entry_id], replies=[reply]
            )
            await self._apply(commit, outcome, now_ms)

    async def sweep(self) -> int:
        """Close sessions idle past their wall-clock deadline; how many were closed."""
        closed = 0
        while True:
            async with self.lock:
                now_ms = int(time.time() * 1000)
                cutoff_ms = min(now_ms, await self._untagged_since_ms())
                due = [u for u, s in self.states.items() if s.deadline_ms <= cutoff_ms]
                if not due:
                    return closed
                outcome = sweep(self.states, due[:SWEEP_CHUNK], self.names, self.limits, now_ms)
                await self._apply(
                    build_commit(self.keys, outcome, self.names, now_ms), outcome, now_ms
                )
                closed += len(outcome.closed)

    async def _untagged_since_ms(self) -> int:
        """When the oldest input entry not yet tagged arrived (its id's time), or now.

        A session is idle only if no event of its user arrived within the timeout: an
        event still waiting in the stream (a takeover's first seconds, a backlog) was
        sent in time, so the sweep judges deadlines only up to the oldest such entry."""
        stream, group = self.keys.input_stream, self.keys.group
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.xpending(stream, group)
            pipe.xinfo_groups(stream)
            pending, groups = await pipe.execute()
        oldest: list[Any] = [pending["min"]] if pending.get("min") else []
        for g in groups:
            if g["name"] in (group, group.encode()):
                unread = await self.client.xrange(
                    stream, b"(" + _as_bytes(g["last-delivered-id"]), b"+", count=1
                )
                oldest += [entry_id for entry_id, _ in unread or []]
        if not oldest:
            return int(time.time() * 1000)
        return min(int(_as_bytes(i).split(b"-")[0]) for i in oldest)


def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
