"""Upstream A3CP's session_manager HTTP models (gesturelabs/a3cp,
schemas/session_manager_start/, schemas/session_manager_end/, and the validate models of
apps/session_manager/routes/router.py), as facts rewritten here.

Like upstream: unknown fields are ignored, `schema_version` is any MAJOR.MINOR.PATCH and
echoed, `record_id` any UUID, a naive `timestamp` is UTC. Stricter than upstream, on
purpose: `user_id` must be an id the tagger accepts (it names files: upstream takes
"../x"), and a training session needs its `training_intent_label` (the tagger's rule,
which ML pipelines select by): both 422, with the reason."""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.api import MsTimes
from schemas.message import SEMVER_PATTERN, USER_ID_PATTERN, Modality

UserId = Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]


def in_utc(value: datetime) -> datetime:
    """A naive time is UTC; an aware one is converted. Out of range in UTC: a reason."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError as exc:  # pydantic would let it through, and the answer be a 500
        raise ValueError("the time falls outside years 1 to 9999 in UTC") from exc


class _Spine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    schema_version: Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)]
    record_id: uuid.UUID = Field(description="The client's; the answer has the server's own.")
    user_id: UserId
    timestamp: datetime = Field(description="The client's time; naive times are UTC.")
    modality: Modality | None = None
    source: str | None = Field(None, description="Ignored: answers say session_manager.")
    performer_id: str | None = Field(
        None, description='Required (400 when blank); "system" for system-initiated.'
    )

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return in_utc(value)


class SessionManagerStartInput(_Spine):
    session_id: str | None = Field(None, description="Ignored: the server makes the id.")
    is_training_data: bool | None = False
    session_notes: Annotated[str, StringConstraints(max_length=4000)] | None = None
    training_intent_label: Annotated[str, StringConstraints(max_length=128)] | None = None

    @model_validator(mode="after")
    def _labelled(self) -> "SessionManagerStartInput":
        if self.is_training_data and not (self.training_intent_label or "").strip():
            raise ValueError(
                "a training session needs its training_intent_label (ML pipelines select "
                "training data by it); send one, or is_training_data false"
            )
        return self


class SessionManagerEndInput(_Spine):
    session_id: str = Field(min_length=1, pattern=r"\S")
    end_time: datetime

    @field_validator("end_time")
    @classmethod
    def _end_utc(cls, value: datetime) -> datetime:
        return in_utc(value)


class _OutSpine(MsTimes):
    schema_version: str
    record_id: uuid.UUID = Field(description="New for every answer (uuid4).")
    user_id: str
    session_id: str
    timestamp: datetime = Field(description="Server time of the answer, UTC, ms.")
    modality: None = None
    source: Literal["session_manager"] = "session_manager"
    performer_id: str | None


class SessionManagerStartOutput(_OutSpine):
    """The session started, or the user's active one (then with its own start fields)."""

    start_time: datetime
    is_training_data: bool
    session_notes: str | None
    training_intent_label: str | None


class SessionManagerEndOutput(_OutSpine):
    end_time: datetime = Field(description="The request's end_time, in UTC.")


class SessionValidateInput(BaseModel):
    user_id: str
    session_id: str


class SessionValidateOutput(BaseModel):
    status: Literal["active", "closed", "invalid"]
