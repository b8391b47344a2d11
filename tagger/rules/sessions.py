"""The session rules, as plain Python over plain data: no I/O.

`tag` takes a partition's active sessions (never changed in place), the recent sessions
of the users that need them, and a batch of checked events in stream order; it returns
an `Outcome`: the records to publish in order, the sessions opened and closed, the new
state of every user it touched, and counts. The runtime commits an outcome whole, or
not at all (tagger/runtime/commit.py). `control` and `sweep` do the same for explicit
start/end requests and for idle sessions.

The rules, each as the previous release's script had them:
- a user's first event opens a session; so does an event more than the timeout after
  the session's last event (the session closes as `timeout`), or one at least the
  maximum duration after its start (`max_duration`);
- an event older than the user's latest session start is `late`: it joins the most
  recent of the user's last LATE_CANDIDATES sessions whose span, widened by the timeout,
  holds it, else the nearest in time; no session opens retroactively;
- a record_id tagged before (within the dedup window) is a duplicate: acked, not tagged."""

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tagger.intake import Accepted
from tagger.rules.outcome import ClosedSessionUpdate, Opened, Outcome
from tagger.rules.records import end_record, note_record, start_record, tagged_record
from tagger.rules.state import CounterNames, SessionState

LATE_CANDIDATES = 8  # how many of a user's most recent sessions a late event may join


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_ms: int
    max_session_ms: int


@dataclass(slots=True)
class Span:
    """One of a user's recent sessions as its registry entry has it (for late events)."""

    sid: str
    start_ms: int
    first_ms: int  # -1: no event
    last_ms: int  # -1: no event
    seq: int


def new_sid(user_id: str, seed: str) -> str:
    """`sess_` + 16 hex derived from the user and the opening record (or request) id, so
    a replay of the same input gives the same ids."""
    return "sess_" + hashlib.sha1(f"{user_id}\0{seed}".encode()).hexdigest()[:16]


def needs_history(
    events: Iterable[Accepted], states: Mapping[str, SessionState], limits: Limits
) -> list[str]:
    """The users whose recent sessions `tag` may need: those without an active session,
    and those with an event before their session's start or late enough to close it (by
    the state before the batch: never fewer than the batch will touch)."""
    users: dict[str, None] = {}
    for e in events:
        s = states.get(e.user_id)
        if e.user_id not in users and (
            s is None
            or e.ts_ms < s.start_ms
            or e.ts_ms - s.last_ms > limits.timeout_ms
            or e.ts_ms - s.start_ms >= limits.max_session_ms
        ):
            users[e.user_id] = None
    return list(users)


def counter_names(e: Accepted, late: bool) -> list[str]:
    """The registry counters one event adds 1 to."""
    names = ["late_events"] if late else []
    if e.modality:
        names.append("modality:" + e.modality)
    if e.source:
        names.append("source:" + e.source)
    return names


@dataclass(slots=True)
class _Batch:
    """The working copy of what one call changes; becomes its Outcome."""

    states: Mapping[str, SessionState]
    history: dict[str, list[Span]]  # newest first; sessions opened here are added
    names: CounterNames
    limits: Limits
    now_ms: int
    out: Outcome = field(default_factory=Outcome)
    numbers: dict[tuple[str, str, bool], list[int]] = field(default_factory=dict)

    def state(self, user: str) -> SessionState | None:
        if user in self.out.states:
            return self.out.states[user]
        s = self.states.get(user)
        if s is not None:  # copied on first touch: the caller's state stays as it was
            s = s.copy()
            self.out.states[user] = s
        return s

    def count(self, s: SessionState, e: Accepted, late: bool) -> None:
        counts = s.counts
        found = self.numbers.get((e.modality, e.source, late))
        if found is None:  # the names of a few modalities and sources, once per batch
            found = self.numbers[(e.modality, e.source, late)] = [
                self.names.number(name) for name in counter_names(e, late)
            ]
        for n in found:
            counts[n] = counts.get(n, 0) + 1

    def open(
        self, user: str, sid: str, start_ms: int, performer: str, meta: dict[str, Any]
    ) -> SessionState:
        s = SessionState(sid, start_ms, start_ms, 0, -1, self.now_ms + self.limits.timeout_ms)
        s.meta = {k: v for k, v in meta.items() if v}
        self.out.states[user] = s
        self.out.opened.append(Opened(user, sid, start_ms, performer, meta))
        self.out.records.append(start_record(user, sid, self.now_ms, performer, start_ms, meta))
        self.out.counts.opened += 1
        spans = self.history.setdefault(user, [])
        spans.insert(0, Span(sid, start_ms, -1, -1, 0))
        return s

    def close(self, user: str, s: SessionState, reason: str, performer: str, end_ms: int) -> None:
        self.out.closed.append((user, s, reason, performer, end_ms))
        self.out.states[user] = None
        self.out.records.append(end_record(user, s, self.now_ms, reason, performer, end_ms))
        for span in self.history.get(user, ()):  # a late event may still join it
            if span.sid == s.sid:
                span.first_ms, span.seq = s.first_ms, s.seq
                span.last_ms = s.last_ms if s.seq > 0 else -1

    def late_target(self, user: str, ts: int, active: SessionState | None) -> Span | SessionState:
        timeout = self.limits.timeout_ms
        best: Span | SessionState | None = None
        best_distance = 0
        for span in self.history[user][:LATE_CANDIDATES]:
            candidate: Span | SessionState = span
            if active is not None and span.sid == active.sid:
                candidate = active
                start, first, last = active.start_ms, active.first_ms, active.last_ms
            else:
                start, first, last = span.start_ms, span.first_ms, span.last_ms
            lo = first if 0 <= first < start else start
            hi = last if last > start else start
            if lo - timeout <= ts <= hi + timeout:
                return candidate
            distance = lo - ts if ts < lo else ts - hi
            if best is None or distance < best_distance:
                best, best_distance = candidate, distance
        assert best is not None, f"no session of {user} known for a late event"
        return best

    def join_closed(self, span: Span, e: Accepted) -> int:
        """A late event into a closed session: its registry entry is updated directly."""
        update = self.out.closed_updates.setdefault(span.sid, ClosedSessionUpdate(span.sid))
        span.seq += 1
        update.seq = span.seq
        for name in counter_names(e, late=True):
            update.increments[name] = update.increments.get(name, 0) + 1
        if span.first_ms < 0 or e.ts_ms < span.first_ms:
            span.first_ms = update.first_ms = e.ts_ms
        if e.ts_ms > span.last_ms:
            span.last_ms = update.last_ms = e.ts_ms
        return span.seq


def tag(
    events: Sequence[Accepted],
    states: Mapping[str, SessionState],
    history: Mapping[str, Sequence[Span]],
    names: CounterNames,
    limits: Limits,
    now_ms: int,
    known: frozenset[str] | set[str] = frozenset(),
) -> Outcome:
    """Tag checked events (stream order). `history`: for each user `needs_history` names,
    their latest sessions, newest first (at least LATE_CANDIDATES of them where they have
    that many). `known`: record_ids tagged before."""
    b = _Batch(states, {u: [dataclasses.replace(s) for s in h] for u, h in history.items()},
               names, limits, now_ms)  # fmt: skip
    out, counts, seen = b.out, b.out.counts, set(known)
    touched, timeout_ms, max_session_ms = out.states, limits.timeout_ms, limits.max_session_ms
    # Bound once: this loop runs once per event, and is most of the rules' cost.
    ack, fresh, publish = out.acked.append, out.fresh.append, out.records.append
    tagged = mismatched = 0
    for e in events:
        ack(e.entry_id)
        record_id = e.record_id
        if record_id in seen:
            counts.duplicates += 1
            continue
        seen.add(record_id)
        fresh(record_id)
        user, ts = e.user_id, e.ts_ms
        s = touched[user] if user in touched else b.state(user)
        if s is not None:
            late = ts < s.start_ms
        else:
            spans = b.history.get(user)
            late = ts < spans[0].start_ms if spans else False
        if late:
            counts.late += 1
            target = b.late_target(user, ts, s)
            if isinstance(target, SessionState):
                target.seq += 1
                target.first_ms = ts if target.first_ms < 0 else min(target.first_ms, ts)
                b.count(target, e, late=True)
                sid, seq = target.sid, target.seq
            else:
                sid, seq = target.sid, b.join_closed(target, e)
        else:
            if s is not None and (ts - s.last_ms > timeout_ms or ts - s.start_ms >= max_session_ms):
                reason = "timeout" if ts - s.last_ms > timeout_ms else "max_duration"
                # A later event may be late for this session: its span must be known.
                assert user in b.history, f"needs_history did not name {user}"
                b.close(user, s, reason, "system", s.last_ms if s.seq > 0 else s.start_ms)
                counts.closed += 1
                counts.closed_max_duration += reason == "max_duration"
                s = None
            if s is None:
                s = b.open(user, new_sid(user, record_id), ts, "system", {})
            if ts > s.last_ms:
                s.last_ms = ts
            if s.first_ms < 0 or ts < s.first_ms:
                s.first_ms = ts
            s.seq += 1
            b.count(s, e, late=False)
            sid, seq = s.sid, s.seq
        mismatch = e.upstream_session_id
        if mismatch and mismatch != sid:
            mismatched += 1
        else:
            mismatch = ""
        publish(tagged_record(e, sid, seq, late, mismatch))
        tagged += 1
    counts.tagged += tagged
    counts.upstream_mismatch += mismatched
    # Every user of the batch with an active session gets a new deadline (as before: late
    # events and duplicates too keep a session from being swept as idle).
    for user in dict.fromkeys([e.user_id for e in events]):
        if (s := b.state(user)) is not None:
            s.deadline_ms = now_ms + timeout_ms
    return out


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A validated start, end or note request (schemas.SessionControlRequest, flattened)."""

    action: str  # "start" | "end" | "note"
    request_id: str
    user_id: str
    performer_id: str
    ts_ms: int
    session_id: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)  # the start's notes, flag, label
    supersede: bool = False
    note: str = ""


def control(
    request: ControlRequest,
    states: Mapping[str, SessionState],
    registry: tuple[str, str] | None,
    names: CounterNames,
    limits: Limits,
    now_ms: int,
) -> tuple[Outcome, tuple[str, str, str]]:
    """An explicit start, end or note; also the reply (status, session_id, reason).
    `registry`: the (user_id, status) of the session an end or a note names, None when
    unknown."""
    b = _Batch(states, {}, names, limits, now_ms)
    user, ts = request.user_id, request.ts_ms
    active = b.state(user)
    if request.action == "start":
        if active is not None and not request.supersede:
            return Outcome(), ("ok", active.sid, "already_active")
        if active is not None:
            b.close(user, active, "superseded", request.performer_id, max(active.last_ms, ts))
        meta = dict(request.meta)
        s = b.open(user, new_sid(user, request.request_id), ts, request.performer_id, meta)
        return b.out, ("ok", s.sid, "superseded" if active else "started")
    sid = request.session_id
    if registry is None:
        return Outcome(), ("error", sid, "not_found")
    if registry[0] != user:
        return Outcome(), ("error", sid, "forbidden")
    if request.action == "note":  # on an active or a closed session alike
        # Stamped with the time it was asked: the one who asked knows the record exactly.
        r = request
        note = note_record(user, sid, ts, r.performer_id, r.note, r.request_id)
        return Outcome(records=[note]), ("ok", sid, "noted")
    if registry[1] != "active" or active is None or active.sid != sid:
        return Outcome(), ("error", sid, "already_closed")
    b.close(user, active, "explicit", request.performer_id, max(active.last_ms, ts))
    return b.out, ("ok", sid, "ended")


def sweep(
    states: Mapping[str, SessionState], users: Iterable[str], names: CounterNames,
    limits: Limits, now_ms: int,
) -> Outcome:  # fmt: skip
    """Close, as `timeout`, the sessions of `users` whose wall-clock deadline has passed."""
    b = _Batch(states, {}, names, limits, now_ms)
    for user in users:
        s = states.get(user)
        if s is not None and s.deadline_ms <= now_ms:
            b.close(user, s, "timeout", "system", s.last_ms if s.seq > 0 else s.start_ms)
    return b.out
