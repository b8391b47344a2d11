"""The caregiver app: server-rendered pages over the same functions as /api/v1.

Pages work without JavaScript (forms post, the server redirects back); a little script
adds the timeline, live updates and local times. Every page needs a login; a page asked
for without one sends people to /login and back."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from exporters.records import record_time, top_label
from exporters.timeline import ASSETS
from schemas import SESSION_ID_PATTERN, USER_ID_PATTERN
from schemas.api import SessionSummary
from tagger.erase import erase_user
from tagger.http.auth import Caller
from tagger.http.deps import authenticate, services
from tagger.http.sessions import ask, detail_of, known_session, note_out, users_of
from tagger.query import Filters, find_sessions, list_users, search_sessions
from tagger.times import duration_text, epoch_ms, parse_time

HERE = Path(__file__).parent
STATIC = {  # path -> (file, media type): the only files served
    "app.css": (HERE / "static" / "app.css", "text/css"),
    "app.js": (HERE / "static" / "app.js", "text/javascript"),
    "timeline.js": (ASSETS / "timeline.js", "text/javascript"),
    "echarts.min.js": (ASSETS / "echarts.min.js", "text/javascript"),
}
REASONS = {"timeout": "timed out", "max_duration": "reached its longest", "explicit": "ended",
           "superseded": "replaced by a new one"}  # fmt: skip
TABLE_ROWS = 2000  # the event table's rows; the timeline draws every record
PAGE_SIZE = 50

templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(include_in_schema=False)


class LoginNeeded(Exception):
    def __init__(self, target: str) -> None:
        self.target = target


def person(request: Request) -> Caller:
    """The logged-in person (or program); to /login first if none, 403 without read."""
    caller = authenticate(request)
    if caller is None:
        query = f"?{request.url.query}" if request.url.query else ""
        raise LoginNeeded(f"/login?next={quote(request.url.path + query)}")
    if not caller.may("read"):
        raise HTTPException(403, f"the {caller.role} role may not read sessions")
    return caller


Person = Annotated[Caller, Depends(person)]


def when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(UTC).isoformat(timespec="milliseconds")


def render(request: Request, name: str, caller: Caller, **context: Any) -> Response:
    context |= {"caller": caller, "when": when, "iso": iso, "duration": duration_text,
                "reasons": REASONS, "flash": request.query_params.get("done")}  # fmt: skip
    return templates.TemplateResponse(request, name, context)


@router.get("/static/{name}")
def static(name: str, _: Person) -> FileResponse:
    if name not in STATIC:
        raise HTTPException(404, "no such file")
    path, media = STATIC[name]
    return FileResponse(path, media_type=media, headers={"cache-control": "private, max-age=300"})


@router.get("/")
def home(request: Request, caller: Person) -> Response:
    s = services(request)
    users, active_count = users_of(s, 200, 0)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    week = today - timedelta(days=today.weekday())

    def started_since(moment: datetime) -> int:
        return find_sessions(s.client, s.partitions, Filters(since_ms=epoch_ms(moment)), 1, 0)[0]

    counts = {
        "today": started_since(today),
        "week": started_since(week),
        "active_count": active_count,
    }
    return render(request, "home.html", caller, nav="home", users=users.items, **counts)


@router.get("/sessions")
def sessions_page(
    request: Request,
    caller: Person,
    user_id: Annotated[str | None, Query(max_length=64)] = None,
    status: str | None = None,
    since: str | None = None,
    until: str | None = None,
    training: str | None = None,
    close_reason: str | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    s = services(request)
    asked = {"user_id": user_id, "status": status, "since": since, "until": until,
             "training": training, "close_reason": close_reason, "q": q}  # fmt: skip
    form = {k: v.strip() for k, v in asked.items() if v and v.strip()}
    filters = _filters(form)
    if form.get("q"):
        total, found = search_sessions(s.client, s.partitions, filters, form["q"],
                                       s.settings.data_dir, PAGE_SIZE, offset)  # fmt: skip
    else:
        total, found = find_sessions(s.client, s.partitions, filters, PAGE_SIZE, offset)
    items = [SessionSummary.from_registry(x) for x in found]

    def page_url(at: int) -> str:
        return "/sessions?" + urlencode(form | {"offset": at})

    user_ids = [u for u, _ in list_users(s.client, s.partitions, 500, 0)[1]]
    pages = {
        "prev_url": page_url(max(0, offset - PAGE_SIZE)) if offset else None,
        "next_url": page_url(offset + PAGE_SIZE) if offset + PAGE_SIZE < total else None,
    }
    return render(request, "sessions.html", caller, nav="sessions", f=form, items=items,
                  total=total, offset=offset, user_ids=user_ids, **pages)  # fmt: skip


@router.get("/sessions/{session_id}")
def session_page(request: Request, caller: Person, session_id: str) -> Response:
    if not _matches(SESSION_ID_PATTERN, session_id):
        raise HTTPException(404, "no session has this id; check it (the Sessions page lists them)")
    s = services(request)
    detail, events = detail_of(s, session_id)
    rows = [_row(n, e) for n, e in enumerate(events[:TABLE_ROWS])]
    # No "<" in the data block (JSON has it only inside strings): nothing can end it early.
    data = orjson.dumps(events).decode().replace("<", "\\u003c")
    return render(request, "session.html", caller, nav="sessions", s=detail, events=events,
                  rows=rows, truncated=len(events) > TABLE_ROWS, events_json=data,
                  can_write=caller.may("write"), can_erase=caller.may("erase"))  # fmt: skip


@router.post("/sessions/{session_id}/notes")
def add_note(
    request: Request, caller: Person, session_id: str,
    note: Annotated[str, Form(min_length=1, max_length=8000)],
    performer_id: Annotated[str, Form(min_length=1, max_length=128)],
) -> Response:  # fmt: skip
    s = _writer(request, caller)
    found = known_session(s, session_id)
    note_out(s, found["user_id"], session_id, note, performer_id)
    return _back(f"/sessions/{session_id}", "Note saved.", "#notes-title")


@router.post("/sessions/{session_id}/end")
def end_session(
    request: Request, caller: Person, session_id: str,
    performer_id: Annotated[str, Form(min_length=1, max_length=128)],
) -> Response:  # fmt: skip
    s = _writer(request, caller)
    found = known_session(s, session_id)
    ask(s, "end", found["user_id"], session_id=session_id, performer_id=performer_id)
    return _back(f"/sessions/{session_id}", "Session ended.")


@router.post("/users/{user_id}/start")
def start_session(
    request: Request, caller: Person, user_id: str,
    performer_id: Annotated[str, Form(min_length=1, max_length=128)],
) -> Response:  # fmt: skip
    s = _writer(request, caller)
    if not _matches(USER_ID_PATTERN, user_id):
        raise HTTPException(404, "no such user")
    reply = ask(s, "start", user_id, performer_id=performer_id)
    said = (
        "A session was already active." if reply.reason == "already_active" else "Session started."
    )
    return _back(f"/sessions/{reply.session_id}", said)


@router.post("/users/{user_id}/erase")
def erase(
    request: Request, caller: Person, user_id: str, confirm: Annotated[str, Form()]
) -> Response:
    if not caller.may("erase"):
        raise HTTPException(403, "only an admin may erase a user")
    if confirm.strip() != user_id or not _matches(USER_ID_PATTERN, user_id):
        raise HTTPException(422, f"type the user id, {user_id}, to confirm; nothing was erased")
    s = services(request)
    erase_user(s.client, s.partitions, s.settings.data_dir, user_id)
    return _back("/", f"{user_id} was erased.")


def _writer(request: Request, caller: Caller) -> Any:
    if not caller.may("write"):
        raise HTTPException(403, f"the {caller.role} role may not change sessions")
    return services(request)


def _back(path: str, done: str, anchor: str = "") -> Response:
    return RedirectResponse(f"{path}?{urlencode({'done': done})}{anchor}", status_code=303)


def _filters(form: dict[str, str]) -> Filters:
    def day(text: str | None, end: bool = False) -> int | None:
        moment = parse_time(text) if text else None
        if moment is None:
            return None
        return (
            epoch_ms(moment + timedelta(days=1)) - 1
            if end and len(text or "") == 10
            else epoch_ms(moment)
        )

    training = {"true": True, "false": False}.get(form.get("training", ""))
    status = form.get("status") if form.get("status") in ("active", "closed") else None
    reason = form.get("close_reason") if form.get("close_reason") in REASONS else None
    user = form.get("user_id") if _matches(USER_ID_PATTERN, form.get("user_id", "")) else None
    return Filters(user, status, day(form.get("since")), day(form.get("until"), end=True),
                   training, reason)  # fmt: skip


def _row(index: int, e: dict[str, Any]) -> dict[str, Any]:
    kind = e.get("kind", "message")
    moment = record_time(e)
    label = top_label(e.get("classifier_output"))
    return {"index": index, "kind": {"message": "event"}.get(kind, kind), "late": e.get("late"),
            "iso": iso(moment), "clock": when(moment), "modality": e.get("modality") or "",
            "source": e.get("source") or "", "performer": e.get("performer_id") or "",
            "label": label if kind == "message" else e.get("note") or e.get("close_reason") or "",
            "seq": e.get("session_seq") or ""}  # fmt: skip


def _matches(pattern: str, text: str) -> bool:
    return re.fullmatch(pattern, text) is not None
