"""What every reader of a session's records asks of one: when it happened, its top label."""

from datetime import datetime
from typing import Any

from tagger.times import parse_time

# A boundary happened at its own time (a session.end is written later than its end).
_STAMP = {"session.start": "start_time", "session.end": "end_time"}


def record_time(record: dict[str, Any]) -> datetime | None:
    """When a record (message, boundary or note) happened; None when it does not say."""
    return parse_time(record.get(_STAMP.get(record.get("kind", "message"), "timestamp")))


def top_label(scores: Any) -> str:
    """The label a classifier scored highest ("" for none)."""
    if not isinstance(scores, dict) or not scores:
        return ""
    return str(max(scores.items(), key=lambda kv: kv[1])[0])
