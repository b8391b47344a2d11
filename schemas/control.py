"""Explicit session start and end requests (shaped like A3CP's session inputs)."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import UUID4, BaseModel, ConfigDict, StringConstraints, model_validator

from schemas.message import SEMVER_PATTERN, SESSION_ID_PATTERN, USER_ID_PATTERN
from schemas.wire import NOTE_MAX_CHARS


class SessionControlRequest(BaseModel):
    """`action` start opens a session (idempotent unless `supersede`); end closes one;
    note appends a caregiver's note to one (active or closed)."""

    model_config = ConfigDict(extra="allow")

    action: Literal["start", "end", "note"]
    schema_version: Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)] = "1.0.1"
    record_id: UUID4
    user_id: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
    timestamp: datetime
    performer_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    session_id: Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)] | None = None
    session_notes: Annotated[str, StringConstraints(max_length=4000)] | None = None
    is_training_data: bool = False
    training_intent_label: Annotated[str, StringConstraints(max_length=128)] | None = None
    supersede: bool = False
    note: Annotated[str, StringConstraints(min_length=1, max_length=NOTE_MAX_CHARS)] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "SessionControlRequest":
        if self.action in ("end", "note") and self.session_id is None:
            raise ValueError(f"a request to {self.action} must name its session_id")
        if self.action == "note" and not (self.note or "").strip():
            raise ValueError("a note request must carry a non-blank note")
        if self.is_training_data and not self.training_intent_label:
            raise ValueError("training sessions must carry a training_intent_label")
        if self.timestamp.tzinfo is None:
            self.timestamp = self.timestamp.replace(tzinfo=UTC)
        return self


class ControlReply(BaseModel):
    """What the tagger answers on the replies stream, keyed by the request's record_id."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    status: Literal["ok", "error"]
    session_id: str
    reason: str
