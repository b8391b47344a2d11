"""What the tagger writes, as models: they document the streams (docs/asyncapi.yaml) and
the tests hold real output to them, so the document cannot drift from what is sent."""

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import UUID4, BaseModel, ConfigDict, Field, StringConstraints, field_serializer

from schemas.message import SESSION_ID_PATTERN, USER_ID_PATTERN, A3CPMessage

SessionId = Annotated[str, StringConstraints(pattern=SESSION_ID_PATTERN)]
UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
CloseReason = Literal["timeout", "max_duration", "explicit", "superseded"]


class TaggedMessage(A3CPMessage):
    """An input event with every field kept as published, plus its session. Entry fields
    beside `data`: `user_id`, `session_id`, `kind` = "message"."""

    session_id: SessionId
    session_seq: int = Field(ge=1, description="1-based position in the session.")
    late: Literal[True] | None = Field(
        None, description="Present (true) when the event is older than the user's latest session."
    )
    upstream_session_id: str | None = Field(
        None, description="The session_id the publisher sent, when it was not this one."
    )


class _ServerRecord(BaseModel):
    """A record the session manager writes: no field beyond the model's; times in ms."""

    model_config = ConfigDict(extra="forbid")

    @field_serializer("*", when_used="json")
    def _times_in_ms(self, value: object) -> object:
        # A3CP's timestamp text: UTC, milliseconds, "Z" (pydantic writes microseconds).
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value


class SessionStart(_ServerRecord):
    """A session opened. Entry fields beside `data`: `user_id`, `session_id`, `kind`."""

    kind: Literal["session.start"]
    schema_version: str
    record_id: UUID4 = Field(description="Derived from the session id: a replay reproduces it.")
    user_id: UserId
    session_id: SessionId
    timestamp: datetime = Field(description="Server time of the decision.")
    source: Literal["session_manager"]
    performer_id: str = Field(description='"system" when the tagger decided.')
    start_time: datetime
    is_training_data: bool
    session_notes: str | None
    training_intent_label: str | None


class SessionEnd(SessionStart):
    """A session closed; repeats the start's metadata so a file reader needs no registry."""

    kind: Literal["session.end"]  # type: ignore[assignment]
    end_time: datetime = Field(description="Time of the session's last event.")
    close_reason: CloseReason
    event_count: int = Field(ge=0)
    first_event_time: datetime | None
    last_event_time: datetime | None


NOTE_MAX_CHARS = 8000


class SessionNote(_ServerRecord):
    """A caregiver's note on a session, after the fact (A3CP F5): a record of its own,
    appended; nothing earlier is edited. Entry fields beside `data`: as for boundaries."""

    kind: Literal["session.note"]
    schema_version: str
    record_id: UUID4 = Field(description="Derived from the session and the request.")
    user_id: UserId
    session_id: SessionId
    timestamp: datetime = Field(description="Server time the note was taken.")
    source: Literal["session_manager"]
    performer_id: str = Field(description="Who wrote the note.")
    note: str = Field(min_length=1, max_length=NOTE_MAX_CHARS)


TaggedOutput = TaggedMessage | SessionStart | SessionEnd | SessionNote


class DeadLetter(BaseModel):
    """A refused input entry (stream entry fields, not JSON): the reason, what to fix, and
    the original bytes, or only their hash and length where keeping them is not allowed."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="One of the reasons in the README's dead-letter table.")
    detail: str = Field(description="One sentence saying what is wrong and what to fix.")
    source_id: str = Field(description="The input entry's stream id.")
    data: str | None = None
    data_sha256: str | None = None
    data_len: int | None = None
