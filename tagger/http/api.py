"""/api/v1: sessions and users for caregivers' tools (the app is built on it)."""

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from exporters.bundle import export_bundle
from schemas import SESSION_ID_PATTERN, USER_ID_PATTERN
from schemas.api import (
    AddNote,
    EndSession,
    Note,
    SessionDetail,
    SessionPage,
    SessionSummary,
    StartSession,
    UserPage,
)
from tagger.erase import erase_user
from tagger.http.auth import Caller
from tagger.http.deps import BODY_PROBLEMS, need, problems, services
from tagger.http.sessions import (
    ask,
    detail_of,
    events_of,
    known_session,
    log_path,
    note_out,
    users_of,
)
from tagger.query import Filters, find_sessions
from tagger.times import epoch_ms

router = APIRouter(prefix="/api/v1", tags=["api"], responses=problems(401, 403))
SessionIdPath = Annotated[str, PathParam(pattern=SESSION_ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]
Reader = Annotated[Caller, Depends(need("read"))]
Writer = Annotated[Caller, Depends(need("write"))]
LIVE_BLOCK_MS = 1000  # a live page's reader wakes this often to see if its client left


@router.get("/sessions", response_model=SessionPage)
def sessions_list(
    request: Request,
    _: Reader,
    user_id: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
    status: Literal["active", "closed"] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    training: bool | None = None,
    close_reason: Literal["timeout", "max_duration", "explicit", "superseded"] | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> SessionPage:
    """Sessions newest first (by start), filtered and paged; `total` counts every match."""
    s = services(request)
    filters = Filters(user_id, status, _ms(since), _ms(until), training, close_reason)
    total, found = find_sessions(s.client, s.partitions, filters, limit, offset)
    return SessionPage(total=total, items=[SessionSummary.from_registry(x) for x in found])


@router.get("/sessions/{session_id}", response_model=SessionDetail, responses=problems(404))
def session_detail(request: Request, _: Reader, session_id: SessionIdPath) -> SessionDetail:
    """One session: the summary, its notes, and the counts its file adds."""
    return detail_of(services(request), session_id)[0]


@router.get("/sessions/{session_id}/events", responses=problems(404))
def session_events(
    request: Request, _: Reader, session_id: SessionIdPath, limit: Limit = 100, offset: Offset = 0
) -> dict[str, Any]:
    """The session's records in time order (boundaries and notes included), as its JSONL
    file holds them: empty until the file sinks have written it."""
    s = services(request)
    events = events_of(s, known_session(s, session_id))
    return {"total": len(events), "items": events[offset : offset + limit]}


@router.get(
    "/sessions/{session_id}/bundle", response_class=FileResponse,
    responses=problems(404, 409) | {200: {"content": {"application/zip": {}}}},
)  # fmt: skip
def session_bundle(request: Request, _: Reader, session_id: SessionIdPath) -> FileResponse:
    """The same zip as `tagger export`."""
    s = services(request)
    found = known_session(s, session_id)
    if not log_path(s, found).exists():
        raise HTTPException(409, f"{session_id} has no file yet; `tagger run` writes it")
    folder = Path(tempfile.mkdtemp(prefix="tagger-bundle-"))
    out = folder / f"{session_id}.zip"
    export_bundle(s.settings.data_dir, session_id, out)
    return FileResponse(
        out, media_type="application/zip", filename=out.name,
        background=BackgroundTask(_remove, folder),
    )  # fmt: skip


@router.post(
    "/sessions", response_model=SessionSummary, status_code=201,
    responses=problems(*BODY_PROBLEMS, 503)
    | {200: {"model": SessionSummary, "description": "The user's active session"}},
)  # fmt: skip
def session_start(
    request: Request, response: Response, _: Writer, body: StartSession
) -> SessionSummary:
    """Start a session for a user (201); while one is active, that one is answered (200)."""
    s = services(request)
    reply = ask(s, "start", body.user_id, **body.model_dump(exclude={"user_id"}))
    if reply.reason == "already_active":
        response.status_code = 200
    return SessionSummary.from_registry(known_session(s, reply.session_id))


@router.post(
    "/sessions/{session_id}/end", response_model=SessionSummary,
    responses=problems(*BODY_PROBLEMS, 404, 409, 503),
)  # fmt: skip
def session_end(
    request: Request, _: Writer, session_id: SessionIdPath, body: EndSession
) -> SessionSummary:
    """End an active session (409 when it is closed already)."""
    s = services(request)
    found = known_session(s, session_id)
    ask(s, "end", found["user_id"], session_id=session_id, performer_id=body.performer_id)
    return SessionSummary.from_registry(known_session(s, session_id))


@router.post(
    "/sessions/{session_id}/notes", response_model=Note, status_code=201,
    responses=problems(*BODY_PROBLEMS, 404, 503),
)  # fmt: skip
def session_note(request: Request, _: Writer, session_id: SessionIdPath, body: AddNote) -> Note:
    """Add a caregiver's note (a `session.note` record; nothing earlier is edited)."""
    s = services(request)
    found = known_session(s, session_id)
    return note_out(s, found["user_id"], session_id, body.note, body.performer_id)


@router.get("/users", response_model=UserPage)
def users(request: Request, _: Reader, limit: Limit = 100, offset: Offset = 0) -> UserPage:
    """Users, most recently active first, each with their active session."""
    return users_of(services(request), limit, offset)[0]


@router.delete("/users/{user_id}")
def user_erase(
    request: Request,
    _: Annotated[Caller, Depends(need("erase"))],
    user_id: Annotated[str, PathParam(pattern=USER_ID_PATTERN)],
) -> dict[str, int]:
    """Erase everything of a user (what `tagger erase` does); what was removed, by kind."""
    s = services(request)
    return erase_user(s.client, s.partitions, s.settings.data_dir, user_id)


@router.get(
    "/sessions/{session_id}/live", response_class=StreamingResponse,
    responses=problems(404) | {200: {"content": {"text/event-stream": {}}}},
)  # fmt: skip
async def session_live(request: Request, _: Reader, session_id: SessionIdPath) -> StreamingResponse:
    """Server-sent events: each new record of the session as `data: <json>`, from now on."""
    s = services(request)
    found = await asyncio.to_thread(known_session, s, session_id)
    keys = next(k for k in s.partitions if k.owns(found["user_id"]))
    return StreamingResponse(
        s.live.follow(keys.output_stream, session_id), media_type="text/event-stream"
    )


def _ms(when: datetime | None) -> int | None:
    """Epoch ms of a query's time; one without an offset is UTC (as A3CP's times are)."""
    if when is None:
        return None
    return epoch_ms(when if when.tzinfo is not None else when.replace(tzinfo=UTC))


def _remove(folder: Path) -> None:
    for f in folder.iterdir():
        f.unlink()
    folder.rmdir()
