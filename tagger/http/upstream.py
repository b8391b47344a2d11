"""Upstream A3CP's session_manager routes, answered as upstream answers them
(apps/session_manager/CONTRACT.md): the same paths, models, codes and error order.

Upstream keeps sessions in one process's memory; here they live in the registry and the
partition's owner applies each start and end, so any number of `tagger serve` processes
answer alike and a session survives restarts (upstream's validate says `invalid` after
one)."""

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from schemas import SESSION_ID_PATTERN, USER_ID_PATTERN
from schemas.upstream import (
    SessionManagerEndInput,
    SessionManagerEndOutput,
    SessionManagerStartInput,
    SessionManagerStartOutput,
    SessionValidateInput,
    SessionValidateOutput,
)
from tagger.http.auth import Caller
from tagger.http.deps import BODY_PROBLEMS, need, problems, services
from tagger.http.sessions import REFUSALS, ask, known_session
from tagger.registry import get_session, validate

router = APIRouter(
    prefix="/session_manager", tags=["upstream session_manager"],
    responses=problems(401, 403, *BODY_PROBLEMS),
)  # fmt: skip
Service = Annotated[Caller, Depends(need("upstream"))]
NO_PERFORMER = "performer_id is required (use 'system' for system-initiated boundaries)"


@router.post("/sessions.start", response_model=SessionManagerStartOutput, responses=problems(503))
def sessions_start(
    request: Request, _: Service, body: SessionManagerStartInput
) -> SessionManagerStartOutput:
    """Start a session for `user_id`, or answer the user's active one (idempotent)."""
    s = services(request)
    performer = _performer(body.performer_id)
    reply = ask(
        s, "start", body.user_id, performer_id=performer,
        session_notes=body.session_notes, is_training_data=bool(body.is_training_data),
        training_intent_label=body.training_intent_label,
    )  # fmt: skip
    session = known_session(s, reply.session_id)
    return SessionManagerStartOutput(
        schema_version=body.schema_version,
        record_id=uuid.uuid4(),
        user_id=body.user_id,
        session_id=reply.session_id,
        timestamp=_now(),
        performer_id=session.get("opened_by") or performer,
        start_time=datetime.fromtimestamp(session["start_ms"] / 1000, tz=UTC),
        is_training_data=bool(session.get("is_training_data")),
        session_notes=session.get("session_notes") or None,
        training_intent_label=session.get("training_intent_label") or None,
    )


@router.post(
    "/sessions.end", response_model=SessionManagerEndOutput, responses=problems(404, 409, 503)
)
def sessions_end(
    request: Request, _: Service, body: SessionManagerEndInput
) -> SessionManagerEndOutput:
    """End the user's session: 404 unknown, 403 another user's, 409 closed; nothing
    changes on any of them."""
    s = services(request)
    performer = _performer(body.performer_id)  # checked before the lookup, as upstream
    if not re.fullmatch(SESSION_ID_PATTERN, body.session_id):
        raise HTTPException(404, REFUSALS["not_found"][1])
    found = get_session(s.client, s.partitions, body.session_id)
    if found is None:
        raise HTTPException(404, REFUSALS["not_found"][1])
    if found["user_id"] != body.user_id:
        raise HTTPException(403, REFUSALS["forbidden"][1])
    ask(s, "end", body.user_id, session_id=body.session_id, performer_id=performer)
    return SessionManagerEndOutput(
        schema_version=body.schema_version,
        record_id=uuid.uuid4(),
        user_id=body.user_id,
        session_id=body.session_id,
        timestamp=_now(),
        performer_id=performer,
        end_time=body.end_time,
    )


@router.post("/sessions.validate", response_model=SessionValidateOutput)
def sessions_validate(
    request: Request, _: Service, body: SessionValidateInput
) -> SessionValidateOutput:
    """`active` or `closed` for the user's own session; `invalid` for anything else."""
    s = services(request)
    ours = re.fullmatch(USER_ID_PATTERN, body.user_id) and re.fullmatch(
        SESSION_ID_PATTERN, body.session_id
    )
    if not ours:  # blank, padded or foreign-shaped ids name no session of ours
        return SessionValidateOutput(status="invalid")
    return SessionValidateOutput(
        status=validate(s.client, s.partitions, body.user_id, body.session_id)
    )


def _performer(performer_id: str | None) -> str:
    if performer_id is None or not performer_id.strip():
        raise HTTPException(400, NO_PERFORMER)
    return performer_id


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
