"""The A3CPMessage spine as this service checks it (A3CP schema reference v1.1)."""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import UUID4, BaseModel, ConfigDict, Field, StringConstraints, field_validator

SEMVER_PATTERN = r"^\d+\.\d+\.\d+$"
# A user_id becomes a directory name in the log tree, so only a safe path segment is
# accepted: no separators, no leading dot, bounded length.
USER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
SESSION_ID_PATTERN = r"^sess_[0-9a-f]{16}$"
# Ids that travel on into logs and file names: printable, one line, bounded.
SafeId = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")
]

Modality = Literal["gesture", "audio", "speech", "image", "multimodal"]


class A3CPMessage(BaseModel):
    """The spine every event carries; unknown fields are allowed and kept untouched."""

    model_config = ConfigDict(extra="allow")

    schema_version: Annotated[str, StringConstraints(pattern=SEMVER_PATTERN)]
    record_id: UUID4
    user_id: Annotated[str, StringConstraints(pattern=USER_ID_PATTERN)]
    timestamp: datetime
    session_id: SafeId | None = None
    modality: Modality | None = None
    source: SafeId | None = None
    performer_id: SafeId | None = None
    classifier_output: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    context: dict[str, Any] | None = None

    @field_validator("record_id", "timestamp", mode="before")
    @classmethod
    def _must_be_text(cls, value: Any) -> Any:
        # Lax parsing would take a number as a UNIX time or a UUID's int; A3CP sends text.
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    @field_validator("timestamp")
    @classmethod
    def _as_utc(cls, value: datetime) -> datetime:
        # A3CP: naive timestamps are UTC, offsets are converted to UTC.
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # not a ValueError: pydantic would let it escape the intake
            raise ValueError("is outside the years 1-9999 once converted to UTC") from None

    @field_validator("classifier_output")
    @classmethod
    def _has_unknown(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and "unknown" not in value:
            raise ValueError('must contain the label "unknown"')
        return value
