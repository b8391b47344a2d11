"""Parse-and-validate path, without a server: each dead-letter reason, and what passes."""

import uuid
from collections.abc import Callable

import orjson
import pytest

from tagger.intake import MAX_ENTRY_BYTES, Accepted, Rejected, check_entry
from tests.conftest import event


def check(payload: bytes | dict[str, object]) -> Accepted | Rejected:
    data = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return check_entry(b"1-0", {b"data": data})


def test_valid_event_keeps_publisher_bytes_exactly() -> None:
    raw = b'{"schema_version": "1.0.1", "record_id": "%s", "user_id": "elias01",\n'
    raw = raw % str(uuid.uuid4()).encode() + b' "timestamp": "2025-06-15T12:34:56.789Z", "x": 1.50}'
    result = check(raw)
    assert isinstance(result, Accepted)
    assert result.head + b"}" == raw
    assert result.ts_ms == 1749990896789


@pytest.mark.parametrize(
    ("stamp", "ts_ms"),
    [
        ("2025-06-15T12:34:56.789Z", 1749990896789),
        ("2025-06-15T12:34:56.789", 1749990896789),  # naive is UTC
        ("2025-06-15T14:34:56.789+02:00", 1749990896789),  # offsets convert to UTC
    ],
)
def test_timestamps_are_read_as_utc(stamp: str, ts_ms: int) -> None:
    result = check(event(timestamp=stamp))
    assert isinstance(result, Accepted)
    assert result.ts_ms == ts_ms


BAD = {
    "invalid_json": b'{"schema_version": "1.0.1",',
    "not_object": b"[1, 2, 3]",
    "bad_schema_version": event(schema_version="1.0"),
    "bad_record_id": event(record_id="abc"),
    "missing_field": {k: v for k, v in event().items() if k != "user_id"},
    "bad_timestamp": event(timestamp="yesterday"),
    "bad_modality": event(modality="smell"),
    "bad_classifier_output": event(classifier_output={"hungry": 0.9}),
    "bad_user_id": event(user_id="../etc"),
    "flat_context": event(context_location="kitchen"),
    "raw_media": event(frame_data="AAAA"),
    "too_deep": orjson.dumps(event())[:-1] + b',"x":' + b"[" * 40 + b"]" * 40 + b"}",
    "duplicate_key": orjson.dumps(event(user_id="ana01"))[:-1] + b',"user_id":"ben02"}',
}


@pytest.mark.parametrize("reason", sorted(BAD))
def test_each_rule_has_its_reason(reason: str) -> None:
    result = check(BAD[reason])
    assert isinstance(result, Rejected)
    assert result.reason == reason
    assert result.detail.endswith(".")


@pytest.mark.parametrize(
    "bad",
    [
        event(user_id="a/b"),
        event(user_id="."),
        event(user_id="x" * 65),
        event(user_id=""),
        event(user_id="\uff45lias"),  # full-width letter
        event(record_id=str(uuid.uuid1())),  # a UUID, but not version 4
        event(timestamp=1750000000),
        event(classifier_output={"unknown": 1.5}),
        event(session_id="sess\nforged log line"),  # control characters in ids
        event(performer_id="carer\x00"),
        event(source="cam\x1b[2J"),
        event(session_id="s" * 129),
    ],
)
def test_more_invalid_spines(bad: dict[str, object]) -> None:
    assert isinstance(check(bad), Rejected)


@pytest.mark.parametrize(
    "media",
    [
        {"audio_payload": "UklGRg==", "audio_format": "base64"},
        {"audio_payload": {"bytes": "UklGRg==", "audio_format": "bytes"}},
        {"annotation": {"thumb": "data:image/png;base64,iVBORw0KGgo="}},
        {"notes": ["ok", "DATA:IMAGE/jpeg;base64,/9j/"]},
    ],
)
def test_raw_media_is_refused_and_not_kept(media: dict[str, object]) -> None:
    result = check(event(**media))
    assert isinstance(result, Rejected)
    assert result.reason == "raw_media"
    assert result.data is None
    assert len(result.data_sha256) == 64


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(event())[:-1] + b',"x":NaN}',
        orjson.dumps(event())[:-1] + b',"x":Infinity}',
        orjson.dumps(event())[:-1] + b',"x":-Infinity}',
        orjson.dumps(event())[:-1] + b',"note":"caf\xe9"}',  # Latin-1, not UTF-8
        orjson.dumps(event())[:-1] + b',"note":"\xed\xa0\x80"}',  # a UTF-8 surrogate
    ],
)
def test_json_that_other_readers_would_read_differently_is_refused(raw: bytes) -> None:
    result = check(raw)
    assert isinstance(result, Rejected)
    assert result.reason == "invalid_json"


def test_duplicate_keys_are_found_in_nested_objects_and_spaced_json() -> None:
    nested = b'{"context": {"room": "a", "room": "b"}, ' + orjson.dumps(event())[1:]
    result = check(nested)
    assert isinstance(result, Rejected)
    assert (result.reason, "'room'" in result.detail) == ("duplicate_key", True)


def test_nesting_up_to_the_limit_passes() -> None:
    nested = orjson.dumps(event())[:-1] + b',"x":' + b"[" * 31 + b"]" * 31 + b"}"
    assert isinstance(check(nested), Accepted)  # 31 arrays inside the event: 32 levels


@pytest.mark.parametrize(
    "media",
    [
        {"notes": "UklGR" + "A" * 4000},  # audio bytes with no marker: a long base64 run
        {"context": {"clip": "data:audio/wav;base64,UklGRg=="}},
        {"attachment": "data:application/octet-stream;base64,AAAA"},
    ],
)
def test_unmarked_media_is_refused_and_not_kept(media: dict[str, object]) -> None:
    result = check(event(**media))
    assert isinstance(result, Rejected)
    assert (result.reason, result.data) == ("raw_media", None)


def test_long_text_that_is_not_base64_passes() -> None:
    assert isinstance(check(event(notes="word " * 2000)), Accepted)


def test_media_hidden_behind_a_json_escape_is_found() -> None:
    raw = orjson.dumps(event()).replace(b'"source"', b'"frame\\u005fdata"')
    result = check(raw)
    assert isinstance(result, Rejected)
    assert result.reason == "raw_media"


def test_audio_reference_without_payload_passes() -> None:
    assert isinstance(check(event(audio_format="base64", modality="audio")), Accepted)


def test_oversized_entry_is_refused_without_its_bytes() -> None:
    result = check(event(notes="x" * MAX_ENTRY_BYTES))
    assert isinstance(result, Rejected)
    assert (result.reason, result.data) == ("oversized", None)
    assert result.data_len > MAX_ENTRY_BYTES


def test_entry_without_data_field() -> None:
    result = check_entry(b"1-0", {b"payload": b"{}"})
    assert isinstance(result, Rejected)
    assert result.reason == "no_data"


def test_incoming_session_id_is_taken_out_of_the_head() -> None:
    result = check(event(session_id="sess_0123456789abcdef", extra={"a": [1, 2]}))
    assert isinstance(result, Accepted)
    assert result.upstream_session_id == "sess_0123456789abcdef"
    body = orjson.loads(result.head + b"}")
    assert "session_id" not in body
    assert body["extra"] == {"a": [1, 2]}


@pytest.mark.parametrize(
    "written",
    [
        lambda u: u.upper(),
        lambda u: u.replace("-", ""),
        lambda u: "{" + u + "}",
        lambda u: "urn:uuid:" + u,
    ],
)
def test_record_id_is_deduplicated_in_its_canonical_form(written: Callable[[str], str]) -> None:
    canonical = str(uuid.uuid4())
    raw = orjson.dumps(event(record_id=written(canonical)))
    result = check_entry(b"1-0", {b"data": raw})
    assert isinstance(result, Accepted) and result.record_id == canonical
