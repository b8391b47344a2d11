"""The output records: a tagged message keeps the publisher's bytes and gains its
session; boundaries are the models of schemas/wire.py, serialised once by orjson."""

import hashlib
import uuid
from typing import Any

import orjson

from schemas.wire import SessionEnd, SessionNote, SessionStart
from tagger.intake import Accepted
from tagger.rules.outcome import Record
from tagger.rules.state import SessionState
from tagger.times import from_epoch_ms


def uuid_for(name: str) -> uuid.UUID:
    """A UUIDv4-shaped id derived from a name, so a replay reproduces boundary ids."""
    h = hashlib.sha1(name.encode()).hexdigest()
    variant = "89ab"[int(h[16], 16) % 4]
    return uuid.UUID(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:32]}")


def tagged_record(e: Accepted, sid: str, seq: int, late: bool, mismatch: str) -> Record:
    # One concatenation onto the publisher's own bytes (its head: the JSON without its
    # closing brace): no re-encoding of the event.
    tail = b',"late":true' if late else b""
    if mismatch:
        tail += b',"upstream_session_id":' + orjson.dumps(mismatch)
    data = b'%s,"session_id":"%s","session_seq":%d%s}' % (e.head, sid.encode(), seq, tail)
    return Record("message", e.user_id, sid, data)


def _boundary_fields(
    user: str, sid: str, now_ms: int, performer: str, start_ms: int, meta: dict[str, Any]
) -> dict[str, Any]:
    return {
        "schema_version": "1.0.1",
        "user_id": user,
        "session_id": sid,
        "timestamp": from_epoch_ms(now_ms),
        "source": "session_manager",
        "performer_id": performer,
        "start_time": from_epoch_ms(start_ms),
        "is_training_data": bool(meta.get("is_training_data")),
        "session_notes": meta.get("session_notes") or None,
        "training_intent_label": meta.get("training_intent_label") or None,
    }


def start_record(
    user: str, sid: str, now_ms: int, performer: str, start_ms: int, meta: dict[str, Any]
) -> Record:
    model = SessionStart(
        kind="session.start",
        record_id=uuid_for(f"{sid}:start"),
        **_boundary_fields(user, sid, now_ms, performer, start_ms, meta),
    )
    return Record("session.start", user, sid, orjson.dumps(model.model_dump(mode="json")))


def end_record(
    user: str, s: SessionState, now_ms: int, reason: str, performer: str, end_ms: int
) -> Record:
    has_events = s.seq > 0
    model = SessionEnd(
        kind="session.end",
        record_id=uuid_for(f"{s.sid}:end"),
        **_boundary_fields(user, s.sid, now_ms, performer, s.start_ms, s.meta),
        end_time=from_epoch_ms(end_ms),
        close_reason=reason,
        event_count=s.seq,
        first_event_time=from_epoch_ms(s.first_ms) if has_events else None,
        last_event_time=from_epoch_ms(s.last_ms) if has_events else None,
    )
    return Record("session.end", user, s.sid, orjson.dumps(model.model_dump(mode="json")))


def note_record(
    user: str, sid: str, now_ms: int, performer: str, note: str, request_id: str
) -> Record:
    model = SessionNote(
        kind="session.note",
        schema_version="1.0.1",
        record_id=note_id(sid, request_id),
        user_id=user,
        session_id=sid,
        timestamp=from_epoch_ms(now_ms),
        source="session_manager",
        performer_id=performer,
        note=note,
    )
    return Record("session.note", user, sid, orjson.dumps(model.model_dump(mode="json")))


def note_id(sid: str, request_id: str) -> uuid.UUID:
    """A note's record_id: the one who asked can name it before the answer comes."""
    return uuid_for(f"{sid}:note:{request_id}")
