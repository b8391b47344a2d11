"""Time as A3CP writes it: UTC, milliseconds, 'Z'; and epoch milliseconds."""

from datetime import UTC, datetime, timedelta
from typing import Any

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch of an aware datetime (exact integer arithmetic)."""
    return (moment - _EPOCH) // _ONE_MS


def iso_ms(ms: int) -> str:
    """A3CP timestamp text for epoch milliseconds: UTC, milliseconds, 'Z'."""
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def now_iso_ms() -> str:
    """The current time as A3CP timestamp text."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 text as an aware UTC datetime (naive is UTC); None for a non-string."""
    if not isinstance(text, str):
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def from_epoch_ms(ms: int) -> datetime:
    """The aware UTC datetime of epoch milliseconds (exact integer arithmetic)."""
    return _EPOCH + ms * _ONE_MS


def duration_text(seconds: float | None) -> str:
    """A duration as people say it: "42 s", "4 min 10 s", "1 h 02 min" ("-" if unknown)."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole // 60 % 60:02d} min"
