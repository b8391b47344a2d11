"""Read the session registry: one hash per session, indexed by start time and by user."""

from typing import Any, Literal

from redis import Redis

from tagger.keys import Keys

Validity = Literal["active", "closed", "invalid"]
_INT_FIELDS = {
    "start_ms",
    "end_ms",
    "last_ms",
    "first_event_ms",
    "last_event_ms",
    "events",
    "seq",
    "late_events",
}


def get_session(client: Redis, keys: Keys, session_id: str) -> dict[str, Any] | None:
    """The registry entry of one session, or None when unknown."""
    raw: Any = client.hgetall(keys.session(session_id))
    return _decode(raw) if raw else None


def validate(client: Redis, keys: Keys, user_id: str, session_id: str) -> Validity:
    """A3CP validate: 'active' | 'closed' for the user's own session, else 'invalid'."""
    fields: Any = client.hmget(keys.session(session_id), ["user_id", "status"])
    owner, status = fields
    if owner is None or owner.decode() != user_id:
        return "invalid"
    return "active" if status == b"active" else "closed"


def list_sessions(
    client: Redis,
    keys: Keys,
    *,
    user_id: str | None = None,
    status: str | None = None,
    since_ms: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Sessions newest first, filtered; `offset`/`limit` page through the filtered list."""
    index = keys.user_sessions(user_id) if user_id else keys.session_index
    low = since_ms if since_ms is not None else "-inf"
    found: list[dict[str, Any]] = []
    skipped, start, chunk = 0, 0, 500
    while len(found) < limit:
        ids: Any = client.zrevrangebyscore(index, "+inf", low, start=start, num=chunk)
        if not ids:
            break
        start += len(ids)
        pipe = client.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(keys.session(sid.decode()))
        for raw in pipe.execute():
            session = _decode(raw)
            if not raw or (status and session["status"] != status):
                continue
            if skipped < offset:
                skipped += 1
            elif len(found) < limit:
                found.append(session)
    return found


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    session: dict[str, Any] = {"modality": {}, "source": {}}
    for key_bytes, value_bytes in raw.items():
        key, value = key_bytes.decode(), value_bytes.decode()
        kind, _, name = key.partition(":")
        if name and kind in ("modality", "source"):
            session[kind][name] = int(value)
        elif key in _INT_FIELDS:
            session[key] = int(value)
        elif key == "is_training_data":
            session[key] = value == "true"
        else:
            session[key] = value
    return session
