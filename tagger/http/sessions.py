"""What the routes share to change sessions: ask the partition's owner (the control
stream), look sessions up, and turn refusals into HTTP answers."""

import threading
import uuid
from collections import OrderedDict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from exporters.bundle import read_events, summarize
from exporters.paths import session_log_path
from schemas import ControlReply
from schemas.api import Note, SessionDetail, SessionSummary, UserPage, UserSummary
from tagger.control import NoReply, request
from tagger.http.deps import Services
from tagger.query import active_sessions, list_users
from tagger.registry import get_session
from tagger.rules.records import note_id
from tagger.times import now_iso_ms

PARSED_FILES = 32  # sessions whose parsed records are kept (a few MB each at most)
_PARSED: "OrderedDict[tuple[str, int, int], list[dict[str, Any]]]" = OrderedDict()
_PARSED_LOCK = threading.Lock()  # routes run in a thread pool

# What each refusal of the owner means over HTTP, with what to do about it.
REFUSALS = {
    "not_found": (404, "Session not found: no session has this id; check it (GET "
                  "/api/v1/sessions lists them)"),
    "forbidden": (403, "Session user mismatch: the session belongs to another user; send "
                  "that session's user_id"),
    "already_closed": (409, "Session already closed: nothing was changed; start a new one "
                       "if the user goes on"),
}  # fmt: skip


def ask(s: Services, action: str, user_id: str, **fields: Any) -> ControlReply:
    """One control request, answered by the partition's owner (503 when none runs)."""
    try:
        reply = request(s.client, s.partitions, action, user_id, **fields)
    except NoReply as exc:
        raise HTTPException(503, str(exc)) from exc
    if reply.status == "ok":
        return reply
    status, detail = REFUSALS.get(reply.reason, (400, f"refused: {reply.reason}"))
    raise HTTPException(status, detail)


def known_session(s: Services, session_id: str) -> dict[str, Any]:
    found = get_session(s.client, s.partitions, session_id)
    if found is None:
        raise HTTPException(404, REFUSALS["not_found"][1])
    return found


def note_out(s: Services, user_id: str, session_id: str, note: str, performer_id: str) -> Note:
    """Append a note to a session through its owner; the note as written."""
    request_id, taken = str(uuid.uuid4()), now_iso_ms()
    ask(s, "note", user_id, record_id=request_id, timestamp=taken, session_id=session_id,
        note=note, performer_id=performer_id)  # fmt: skip
    return Note.model_validate(
        {"record_id": str(note_id(session_id, request_id)), "session_id": session_id,
         "timestamp": taken, "performer_id": performer_id, "note": note}
    )  # fmt: skip


def detail_of(s: Services, session_id: str) -> tuple[SessionDetail, list[dict[str, Any]]]:
    """A session's summary with its notes and the counts its file adds; its records."""
    found = known_session(s, session_id)
    events = events_of(s, found)
    summary = summarize(session_id, events) if events else {"notes": [], "summary": {}}
    figures = summary["summary"]
    detail = SessionDetail(
        **SessionSummary.from_registry(found).model_dump(),
        notes=[Note.model_validate(n) for n in summary["notes"]],
        by_performer=figures.get("by_performer", {}),
        top_labels=figures.get("top_labels", {}),
    )
    return detail, events


def events_of(s: Services, session: dict[str, Any]) -> list[dict[str, Any]]:
    """The session's records in time order, from its JSONL file (none until written).
    Parsed once per version of the file (its size and time): a page, its events and its
    live view ask for the same session again and again, and a 5,000-event file takes
    ~40 ms to parse (bench.http_reads)."""
    path = log_path(s, session)
    try:
        stat = path.stat()
    except FileNotFoundError:
        return []
    version = (str(path), stat.st_size, stat.st_mtime_ns)
    with _PARSED_LOCK:
        if version in _PARSED:
            _PARSED.move_to_end(version)
            return list(_PARSED[version])
    events = read_events(path)
    with _PARSED_LOCK:
        _PARSED[version] = events
        while len(_PARSED) > PARSED_FILES:
            _PARSED.popitem(last=False)
    return list(events)


def log_path(s: Services, session: dict[str, Any]) -> Path:
    return session_log_path(s.settings.data_dir, session["user_id"], session["session_id"])


def users_of(s: Services, limit: int, offset: int) -> tuple[UserPage, int]:
    """A page of users, latest activity first, each with their active session; and how
    many sessions are active in all."""
    total, page = list_users(s.client, s.partitions, limit, offset)
    active = active_sessions(s.client, s.partitions)
    items = []
    for user_id, latest_ms in page:
        session = active.get(user_id)
        last_ms = max(latest_ms, session.get("last_event_ms", -1) if session else -1)
        items.append(
            UserSummary(
                user_id=user_id,
                active_session=SessionSummary.from_registry(session) if session else None,
                last_activity=datetime.fromtimestamp(last_ms / 1000, tz=UTC)
                if last_ms >= 0
                else None,
            )
        )
    return UserPage(total=total, items=items), len(active)
