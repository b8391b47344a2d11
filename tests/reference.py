"""An independent, deliberately plain model of the session rules, to check the script."""

from collections.abc import Iterable


def reference_partition(
    events: Iterable[tuple[str, int, str]], timeout_ms: int, max_session_ms: int
) -> set[frozenset[str]]:
    """Group record_ids into sessions. `events` are (user_id, ts_ms, record_id) in
    stream order; a new session opens on a first event, after a gap longer than the
    timeout past the latest event seen, or once the session has lasted max_session_ms."""
    open_sessions: dict[str, tuple[int, int, list[str]]] = {}  # user -> (start, latest, ids)
    closed: list[list[str]] = []
    for user, ts, record_id in events:
        current = open_sessions.get(user)
        if current is not None:
            start, latest, ids = current
            if ts - latest <= timeout_ms and ts - start < max_session_ms:
                ids.append(record_id)
                open_sessions[user] = (start, max(latest, ts), ids)
                continue
            closed.append(ids)
        open_sessions[user] = (ts, ts, [record_id])
    closed.extend(ids for _, _, ids in open_sessions.values())
    return {frozenset(ids) for ids in closed}


def observed_partition(tagged_events: Iterable[dict[str, object]]) -> set[frozenset[str]]:
    """Group the output's record_ids by the session_id the tagger gave them."""
    sessions: dict[object, set[str]] = {}
    for e in tagged_events:
        sessions.setdefault(e["session_id"], set()).add(str(e["record_id"]))
    return {frozenset(ids) for ids in sessions.values()}
