"""The JSON of `tagger serve`'s /api/v1, and the one session summary the API, the CLI and
the app show (built from the registry, so it needs no file)."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_serializer,
    field_validator,
    model_validator,
)

from schemas.message import USER_ID_PATTERN
from schemas.wire import NOTE_MAX_CHARS

Performer = Annotated[str, StringConstraints(min_length=1, max_length=128)]


def _time(ms: Any) -> datetime | None:
    if not isinstance(ms, int) or ms < 0:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


class MsTimes(BaseModel):
    """Times written as A3CP writes them."""

    @field_serializer("*", when_used="json")
    def _times_in_ms(self, value: object) -> object:
        if isinstance(value, datetime):  # A3CP's form: UTC, milliseconds, "Z"
            return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value


class SessionSummary(MsTimes):
    """A session as people read it: who, when, how long, how it ended."""

    session_id: str
    user_id: str
    status: Literal["active", "closed"]
    start_time: datetime
    end_time: datetime | None = Field(description="Null while active.")
    last_activity: datetime | None = Field(description="The latest event, if any.")
    duration_s: float | None = Field(description="Start to end, or to the latest event.")
    close_reason: str | None
    opened_by: str | None
    closed_by: str | None
    event_count: int
    late_events: int
    note_count: int = Field(description="Notes added after the fact.")
    is_training_data: bool
    training_intent_label: str | None
    session_notes: str | None
    by_modality: dict[str, int]
    by_source: dict[str, int]

    @classmethod
    def from_registry(cls, s: dict[str, Any]) -> "SessionSummary":
        start = _time(s.get("start_ms"))
        end = _time(s.get("end_ms")) if s.get("status") == "closed" else None
        last = _time(s.get("last_event_ms"))
        until = end or last
        return cls(
            session_id=s["session_id"],
            user_id=s["user_id"],
            status="active" if s.get("status") == "active" else "closed",
            start_time=start or datetime.fromtimestamp(0, tz=UTC),
            end_time=end,
            last_activity=last,
            duration_s=(until - start).total_seconds() if start and until else None,
            close_reason=s.get("close_reason") or None,
            opened_by=s.get("opened_by") or None,
            closed_by=s.get("closed_by") or None,
            event_count=int(s.get("events") or 0),
            late_events=int(s.get("late_events") or 0),
            note_count=int(s.get("notes") or 0),
            is_training_data=bool(s.get("is_training_data")),
            training_intent_label=s.get("training_intent_label") or None,
            session_notes=s.get("session_notes") or None,
            by_modality=dict(s.get("modality") or {}),
            by_source=dict(s.get("source") or {}),
        )


class Note(MsTimes):
    record_id: str
    session_id: str
    timestamp: datetime
    performer_id: str
    note: str


class SessionDetail(SessionSummary):
    """The summary, with what the session's file adds (empty until the sinks wrote it)."""

    notes: list[Note]
    by_performer: dict[str, int]
    top_labels: dict[str, int] = Field(description="Top classifier label -> events.")


class SessionPage(BaseModel):
    total: int
    items: list[SessionSummary]


class EventPage(BaseModel):
    total: int
    items: list[dict[str, Any]] = Field(
        description="Records in time order: session.start, messages, notes, session.end."
    )


class UserSummary(MsTimes):
    user_id: str
    active_session: SessionSummary | None
    last_activity: datetime | None


class UserPage(BaseModel):
    total: int
    items: list[UserSummary]


class StartSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
    performer_id: Performer
    session_notes: Annotated[str, StringConstraints(max_length=4000)] | None = None
    is_training_data: bool = False
    training_intent_label: Annotated[str, StringConstraints(max_length=128)] | None = None

    @model_validator(mode="after")
    def _labelled(self) -> "StartSession":
        # The owner's rule (schemas/control.py), answered here as a 422 with the reason.
        if self.is_training_data and not self.training_intent_label:
            raise ValueError("training sessions must carry a training_intent_label")
        return self


class EndSession(BaseModel):
    model_config = ConfigDict(extra="forbid")

    performer_id: Performer


class AddNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(min_length=1, max_length=NOTE_MAX_CHARS)]
    performer_id: Performer

    @field_validator("note")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        # The owner's rule (schemas/control.py: blank by str.strip), answered as a 422.
        if not value.strip():
            raise ValueError("a note must not be blank")
        return value


class Problem(BaseModel):
    """Every error: what went wrong and what to do."""

    detail: str
