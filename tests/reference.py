"""An independent, deliberately plain model of the session rules, to check the script."""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LATE_CANDIDATES = 8  # how many of a user's most recent sessions a late event may join


@dataclass
class _Session:
    start: int
    first: int
    last: int
    ids: list[str] = field(default_factory=list)


def reference_partition(
    events: Iterable[tuple[str, int, str]],
    timeout_ms: int,
    max_session_ms: int,
    reached: dict[str, int] | None = None,
) -> set[frozenset[str]]:
    """Group record_ids into sessions. `events` are (user_id, ts_ms, record_id) in stream
    order. A new session opens on a user's first event, after a gap longer than the
    timeout past the latest event, or once the session has lasted max_session_ms. An
    event older than the user's latest session start is late: it joins the most recent
    session whose span widened by the timeout holds it, else the nearest one.
    `reached`, when given, counts the rules met: "max_duration" (a session rolled because
    it lasted too long) and "late_depth" (the deepest recent session a late event joined,
    1 = the latest)."""
    reached = {} if reached is None else reached
    by_user: dict[str, list[_Session]] = {}
    for user, ts, record_id in events:
        sessions = by_user.setdefault(user, [])
        latest = sessions[-1] if sessions else None
        if latest is not None and ts < latest.start:
            target = _late_target(sessions, ts, timeout_ms)
            depth = len(sessions) - sessions.index(target)
            reached["late_depth"] = max(reached.get("late_depth", 0), depth)
        elif (
            latest is not None
            and ts - latest.last <= timeout_ms
            and ts - latest.start < max_session_ms
        ):
            target = latest
        else:
            if latest is not None and ts - latest.last <= timeout_ms:
                reached["max_duration"] = reached.get("max_duration", 0) + 1
            target = _Session(start=ts, first=ts, last=ts)
            sessions.append(target)
        target.ids.append(record_id)
        target.first = min(target.first, ts)
        target.last = max(target.last, ts)
    return {frozenset(s.ids) for sessions in by_user.values() for s in sessions}


def _late_target(sessions: list[_Session], ts: int, timeout_ms: int) -> _Session:
    best, best_distance = None, 0
    for s in reversed(sessions[-LATE_CANDIDATES:]):
        lo, hi = min(s.first, s.start), max(s.last, s.start)
        if lo - timeout_ms <= ts <= hi + timeout_ms:
            return s
        distance = lo - ts if ts < lo else ts - hi
        if best is None or distance < best_distance:
            best, best_distance = s, distance
    assert best is not None
    return best


def observed_partition(tagged_events: Iterable[dict[str, object]]) -> set[frozenset[str]]:
    """Group the output's record_ids by the session_id the tagger gave them."""
    sessions: dict[object, set[str]] = {}
    for e in tagged_events:
        sessions.setdefault(e["session_id"], set()).add(str(e["record_id"]))
    return {frozenset(ids) for ids in sessions.values()}


def check_bracketing(output: list[dict[str, Any]]) -> None:
    """Per session in the output stream: one start first, then its events (session_seq
    1, 2, ...), then at most one end; only events flagged late may follow the end."""
    started: set[object] = set()
    ended: set[object] = set()
    seqs: dict[object, list[int]] = {}
    for e in output:
        sid, kind = e["session_id"], e.get("kind", "message")
        if kind == "session.start":
            assert sid not in started, f"{sid} started twice"
            started.add(sid)
        elif kind == "session.end":
            assert sid in started and sid not in ended, f"{sid} ended out of place"
            ended.add(sid)
            assert e["event_count"] == len(seqs.get(sid, []))
        else:
            assert sid in started, f"event before the start of {sid}"
            assert sid not in ended or e.get("late") is True, f"event after the end of {sid}"
            seqs.setdefault(sid, []).append(int(e["session_seq"]))
    for sid, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), f"gap in session_seq of {sid}"
