"""The A3CPMessage spine of a usual event, checked without building the model.

`A3CPMessage.model_validate` cost about 4-6 µs of the intake's ~15 µs per event
(bench.worker_cpu), most of it building the model, its UUID and datetime, and calling
its Python validators. `usual_spine` accepts only the plain forms publishers send (a
canonical lowercase UUID4, an ISO 8601 timestamp, ids of printable characters, ...),
each a subset of what the model accepts, and gives the same values the model would;
for anything else it returns None and the intake asks the model itself, which then
decides, with its own error texts. tests/test_intake_spine.py holds the two to agreeing.
"""

import re
from datetime import UTC, datetime
from typing import Any, get_args

from schemas.message import USER_ID_PATTERN, A3CPMessage, Modality
from tagger.times import epoch_ms

_SEMVER = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+")  # ASCII digits: within the model's \d
_UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
_USER_ID = re.compile(USER_ID_PATTERN.removeprefix("^").removesuffix("$"))
# ISO 8601 as A3CP writes it; datetime.fromisoformat reads these as pydantic does (it
# refuses an impossible date or offset, and then the model decides).
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?"
)
_MODALITIES = frozenset(get_args(Modality))


# What the intake keeps of the spine: user_id, record_id (canonical), timestamp in epoch
# ms, modality and source ("" when absent). A tuple: the cheapest thing to build.
Spine = tuple[str, str, int, str, str]


def spine_of(event: dict[str, Any]) -> Spine:
    """The spine of an event; raises the model's ValidationError when it is invalid."""
    return usual_spine(event) or model_spine(event)


def usual_spine(event: dict[str, Any]) -> Spine | None:
    """The spine of an event in the usual forms, or None: then only the model can tell."""
    get = event.get
    version, record_id, user_id, stamp = (
        get("schema_version"), get("record_id"), get("user_id"), get("timestamp")
    )  # fmt: skip
    if not (
        type(version) is str
        and _SEMVER.fullmatch(version)
        and type(record_id) is str
        and _UUID4.fullmatch(record_id)
        and type(user_id) is str
        and _USER_ID.fullmatch(user_id)
        and type(stamp) is str
        and _TIMESTAMP.fullmatch(stamp)
    ):
        return None
    modality, source = get("modality"), get("source")
    if modality is not None and (type(modality) is not str or modality not in _MODALITIES):
        return None
    for safe_id in (source, get("session_id"), get("performer_id")):
        # isprintable() refuses every control character the model's SafeId refuses, and more.
        if safe_id is not None and not (
            type(safe_id) is str and 0 < len(safe_id) <= 128 and safe_id.isprintable()
        ):
            return None
    scores = get("classifier_output")
    if scores is not None:
        if type(scores) is not dict or "unknown" not in scores:
            return None
        for score in scores.values():
            if not ((type(score) is float or type(score) is int) and 0.0 <= score <= 1.0):
                return None
    context = get("context")
    if context is not None and type(context) is not dict:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        elif moment.tzinfo is not UTC:  # ("Z" and "+00:00" give UTC itself)
            moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return user_id, record_id, epoch_ms(moment), modality or "", source or ""


def model_spine(event: dict[str, Any]) -> Spine:
    """The spine as the model reads it (any form it accepts); raises ValidationError."""
    spine = A3CPMessage.model_validate(event)
    record_id = event["record_id"]  # a string: the validator refuses anything else
    if len(record_id) != 36 or not record_id.islower():
        record_id = str(spine.record_id)  # the canonical form is the one deduplicated
    return (
        spine.user_id,
        record_id,
        epoch_ms(spine.timestamp),
        spine.modality or "",
        spine.source or "",
    )
