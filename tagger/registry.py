"""Read the session registry: one hash per session, indexed by start time and by user.

Each partition has its own registry; a user's sessions are all in the user's partition."""

from collections.abc import Sequence
from typing import Any, Literal

from redis import Redis

from tagger.keys import Keys
from tagger.rules.state import CounterNames, counters_by_name, decode_state, state_version

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
    "notes",
}


def user_partition(partitions: Sequence[Keys], user_id: str) -> Keys:
    (keys,) = [k for k in partitions if k.owns(user_id)]
    return keys


def get_session(
    client: Redis, partitions: Sequence[Keys], session_id: str
) -> dict[str, Any] | None:
    """The registry entry of one session, or None when unknown (the id does not say which
    partition holds it: each is asked in turn)."""
    for keys in partitions:
        raw: Any = client.hgetall(keys.session(session_id))
        if raw:
            session = _decode(raw)
            if session["status"] == "active":
                packed: Any = client.hget(keys.active, session["user_id"])
                names = _counter_names(client, keys, [packed])
                if not _add_live_figures(session, packed, names):
                    # It closed between the two reads: the hash holds its figures now.
                    raw = client.hgetall(keys.session(session_id))
                    session = _decode(raw)
            return session
    return None


def validate(client: Redis, partitions: Sequence[Keys], user_id: str, session_id: str) -> Validity:
    """A3CP validate: 'active' | 'closed' for the user's own session, else 'invalid'."""
    keys = user_partition(partitions, user_id)
    fields: Any = client.hmget(keys.session(session_id), ["user_id", "status"])
    owner, status = fields
    if owner is None or owner.decode() != user_id:
        return "invalid"
    return "active" if status == b"active" else "closed"


def list_sessions(
    client: Redis,
    partitions: Sequence[Keys],
    *,
    user_id: str | None = None,
    status: str | None = None,
    since_ms: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Sessions newest first, filtered; `offset`/`limit` page through the filtered list."""
    if user_id is not None:
        partitions = [user_partition(partitions, user_id)]
    if len(partitions) == 1:
        return _list_one(client, partitions[0], user_id, status, since_ms, limit, offset)
    # Each partition's first offset+limit, merged: enough for the page, whatever the mix.
    merged = [
        session
        for keys in partitions
        for session in _list_one(client, keys, user_id, status, since_ms, offset + limit, 0)
    ]
    merged.sort(key=lambda session: session["start_ms"], reverse=True)
    return merged[offset : offset + limit]


def _list_one(
    client: Redis,
    keys: Keys,
    user_id: str | None,
    status: str | None,
    since_ms: int | None,
    limit: int,
    offset: int,
) -> list[dict[str, Any]]:
    index = keys.user_sessions(user_id) if user_id else keys.session_index
    low = since_ms if since_ms is not None else "-inf"
    found: list[dict[str, Any]] = []
    skipped, start, chunk = 0, 0, 500
    while len(found) < limit:
        ids: Any = client.zrevrangebyscore(index, "+inf", low, start=start, num=chunk)
        if not ids:
            break
        start += len(ids)
        for session in hydrate(client, [(keys, sid) for sid in ids]):
            if status and session["status"] != status:
                continue
            if skipped < offset:
                skipped += 1
            elif len(found) < limit:
                found.append(session)
    return found


def hydrate(client: Redis, ids: Sequence[tuple[Keys, bytes]]) -> list[dict[str, Any]]:
    """The registry entries of these sessions (unknown ones left out), in their order, with
    live figures for the active ones: three round trips, plus one per partition for the
    counter names."""
    pipe = client.pipeline(transaction=False)
    for keys, sid in ids:
        pipe.hgetall(keys.session(sid.decode()))
    sessions = [
        (keys, _decode(raw)) for (keys, _), raw in zip(ids, pipe.execute(), strict=True) if raw
    ]
    active = [(keys, s) for keys, s in sessions if s["status"] == "active"]
    for keys, s in active:
        pipe.hget(keys.active, s["user_id"])
    states = list(zip(active, pipe.execute(), strict=True))
    names = {
        keys.partition: _counter_names(
            client, keys, [packed for (k, _), packed in states if k.partition == keys.partition]
        )
        for keys in {k.partition: k for k, _ in active}.values()
    }
    closed_meanwhile = [
        (keys, s) for (keys, s), packed in states
        if not _add_live_figures(s, packed, names[keys.partition])
    ]  # fmt: skip
    for keys, s in closed_meanwhile:  # the hash holds its figures now
        pipe.hgetall(keys.session(s["session_id"]))
    for (_, s), raw in zip(closed_meanwhile, pipe.execute(), strict=True):
        s |= _decode(raw)
    return [s for _, s in sessions]


def _counter_names(client: Redis, keys: Keys, states: Sequence[bytes | None]) -> CounterNames:
    """The names of the counters these states hold by number (versions 3 and 4)."""
    numbers = sorted(
        {
            n
            for packed in states
            if packed and state_version(packed) >= 3
            for n in decode_state(packed).counts
        }
    )
    table = CounterNames()
    if numbers:
        names: Any = client.hmget(keys.counter_names, [f"#{n}" for n in numbers])
        table.names = {n: name.decode() for n, name in zip(numbers, names, strict=True) if name}
    return table


def _add_live_figures(session: dict[str, Any], packed: bytes | None, names: CounterNames) -> bool:
    """Overlay an active session's figures from its state in the active hash; True when
    the registry hash needs nothing more: the state was this session's, or in the
    earliest versions' text form (which kept the hash up to date). False when the session
    has no state any more: it closed after its hash was read."""
    if packed and state_version(packed) == 1:
        return True
    if not packed:
        return False
    state = decode_state(packed)
    if state.sid != session["session_id"]:
        return False
    session |= {"seq": state.seq, "events": state.seq, "last_ms": state.last_ms}
    session |= {
        "first_event_ms": state.first_ms,
        "last_event_ms": state.last_ms if state.seq else -1,
    }
    for name, n in counters_by_name(state, names).items():
        _put_count(session, name, n)
    return True


def _put_count(session: dict[str, Any], name: str, n: int) -> None:
    """A registry counter: `modality:<m>` and `source:<s>` go into their own dicts."""
    kind, _, item = name.partition(":")
    if item and kind in ("modality", "source"):
        session[kind][item] = n
    else:
        session[name] = n


def _decode(raw: dict[bytes, bytes]) -> dict[str, Any]:
    session: dict[str, Any] = {"modality": {}, "source": {}}
    for key_bytes, value_bytes in raw.items():
        key, value = key_bytes.decode(), value_bytes.decode()
        kind, _, name = key.partition(":")
        if (name and kind in ("modality", "source")) or key in _INT_FIELDS:
            _put_count(session, key, int(value))
        elif key == "is_training_data":
            session[key] = value == "true"
        else:
            session[key] = value
    return session
