"""The intake against upstream A3CP: its published examples, the rules of its A3CPMessage
on capture_id, annotation and raw_features_ref, and events from a device whose clock is
ahead of the server's (issue 19). Pure tests of check_entry, then one against the server."""

import copy
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from redis import Redis

from tagger.intake import DEFAULT_MAX_CLOCK_SKEW_S, Accepted, Rejected, check_entry
from tagger.settings import Settings
from tagger.times import iso_ms
from tests.conftest import SettingsFactory, event, output, publish, run_burst, streams, tagged
from tests.test_intake_fuzz import json_values

FIXTURES = Path(__file__).parent / "fixtures" / "upstream_messages"
EXPECTED: dict[str, str | None] = orjson.loads((FIXTURES / "expected.json").read_bytes())
RULES = orjson.loads((FIXTURES / "rules.cases.json").read_bytes())
ARRIVAL_MS = 1_760_000_000_000  # 2025-10-09: after every published example's timestamp
ARRIVAL_ID = b"%d-0" % ARRIVAL_MS
NEW_REASONS = ("bad_capture_id", "annotation_outside_capture_open", "bad_annotation")
NEW_REASONS += ("bad_raw_features_ref", "clock_ahead")
MINUTE_MS = 60_000


def check(message: dict[str, Any], entry_id: bytes = ARRIVAL_ID, **kw: Any) -> Any:
    return check_entry(entry_id, {b"data": orjson.dumps(message)}, **kw)


def reason_of(result: Accepted | Rejected) -> str | None:
    return result.reason if isinstance(result, Rejected) else None


# -- upstream's published examples ------------------------------------------------------


def test_the_fixtures_list_every_example_file() -> None:
    files = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.glob("*/*.json")}
    assert files == set(EXPECTED)
    assert sum(reason is None for reason in EXPECTED.values()) == 7


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_published_example_is_judged_as_upstream_judges_it(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    result = check_entry(ARRIVAL_ID, {b"data": raw})
    assert reason_of(result) == EXPECTED[name], getattr(result, "detail", "")
    if isinstance(result, Accepted):  # tagged as published: the bytes and its fields
        assert orjson.loads(result.head + b"}") == {
            k: v for k, v in orjson.loads(raw).items() if k != "session_id"
        }


# -- upstream's rules, case by case -----------------------------------------------------


def apply(case: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = copy.deepcopy(orjson.loads((FIXTURES / RULES["base"]).read_bytes()))
    for path, value in case.get("set", {}).items():
        *parents, leaf = path.split(".")
        node = message
        for part in parents:
            node = node[part]
        node[leaf] = value
    for path in case.get("drop", []):
        *parents, leaf = path.split(".")
        node = message
        for part in parents:
            node = node[part]
        del node[leaf]
    return message


def case_id(case: dict[str, Any]) -> str:
    return orjson.dumps(case.get("set") or {"drop": case["drop"]}).decode()[:70]


@pytest.mark.parametrize("case", RULES["cases"], ids=case_id)
def test_each_rule_case(case: dict[str, Any]) -> None:
    result = check(apply(case))
    assert reason_of(result) == case["reason"], getattr(result, "detail", "")
    if "deviation" not in case:  # refused exactly when upstream refuses
        assert (case["reason"] is None) == (case["upstream"] == "accepts")


def test_the_cases_cover_every_new_message_rule_both_ways() -> None:
    reasons = {c["reason"] for c in RULES["cases"]}
    assert reasons == {None, *NEW_REASONS[:-1]}
    for field in ("capture_id", "annotation", "raw_features_ref"):
        touched = [c for c in RULES["cases"] if any(k.startswith(field) for k in c.get("set", {}))]
        assert {c["upstream"] for c in touched} == {"accepts", "refuses"}


@pytest.mark.parametrize(
    ("change", "reason", "says"),
    [
        ({"capture_id": "cap-7"}, "bad_capture_id", ['"cap-7"', "UUID", "leave capture_id out"]),
        (
            {"annotation": {"intent": "hungry"}, "event": "capture.frame_meta"},
            "annotation_outside_capture_open",
            ['"capture.frame_meta"', "capture.open", "leave annotation out"],
        ),
        (
            {"annotation": {"intent": "hungry"}},
            "annotation_outside_capture_open",
            ["'event' is missing", "capture.open"],
        ),
        ({"annotation": {}, "event": "capture.open"}, "bad_annotation", ["string 'intent'"]),
        (
            {"raw_features_ref": {"uri": "/data/u01/g.npz", "shape": [42, 128]}},
            "bad_raw_features_ref",
            ["'hash' is missing", '"sha256:<hex digest>"', '"format": "npz"'],
        ),
    ],
)
def test_a_refusal_says_what_to_fix(change: dict[str, Any], reason: str, says: list[str]) -> None:
    raw = orjson.dumps(event(**change))
    result = check_entry(ARRIVAL_ID, {b"data": raw})
    assert isinstance(result, Rejected) and result.reason == reason
    for words in says:
        assert words in result.detail
    assert result.data == raw  # kept, to be published again once fixed


@pytest.mark.parametrize(
    ("problem", "says"),
    [
        ({"uri": "/d/g.parquet"}, "'uri' \"/d/g.parquet\" does not end in .npz"),
        ({"hash": "ab12"}, "'hash' \"ab12\" does not start with 'sha256:'"),
        ({"encoding": " "}, "'encoding' is \" \", not a non-empty string"),
        ({"shape": [42]}, "'shape' is [42], not two integers [T, D]"),
        ({"shape": [42, 1.5]}, "'shape' is [42,1.5], not two integers [T, D]"),
        ({"format": "parquet"}, '\'format\' is "parquet", not "npz"'),
    ],
)
def test_a_bad_reference_names_its_problem(problem: dict[str, Any], says: str) -> None:
    ref = {"uri": "/d/g.npz", "hash": "sha256:00", "encoding": "e", "shape": [42, 128]}
    result = check(event(raw_features_ref={**ref, "dtype": "float32", "format": "npz", **problem}))
    assert isinstance(result, Rejected) and result.reason == "bad_raw_features_ref"
    assert says in result.detail


def test_earlier_rules_keep_their_reasons() -> None:
    """An event the intake refused before is refused for the same reason."""
    future = iso_ms(ARRIVAL_MS + 86_400_000)
    both = {"capture_id": "x", "timestamp": future}
    assert reason_of(check(event(record_id="abc", **both))) == "bad_record_id"
    assert reason_of(check(event(frame_data="AAAA", **both))) == "raw_media"
    assert reason_of(check(event(modality="smell", **both))) == "bad_modality"


def test_the_new_fields_are_kept_as_published() -> None:
    message = orjson.loads((FIXTURES / "accepted" / "a3cp_message_output.json").read_bytes())
    message["capture_id"] = "{11111111-2222-3333-4444-555555555555}"  # upstream's lax form
    raw = orjson.dumps(message)
    result = check_entry(ARRIVAL_ID, {b"data": raw})
    assert isinstance(result, Accepted)
    assert orjson.loads(result.head + b"}")["capture_id"] == message["capture_id"]


FIELDS = ("capture_id", "annotation", "event", "raw_features_ref")
REF_KEYS = ("uri", "hash", "encoding", "shape", "dtype", "format", "x")


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), json_values),
    ref=st.none() | st.dictionaries(st.sampled_from(REF_KEYS), json_values),
)
def test_the_new_rules_never_raise(changes: dict[str, Any], ref: dict[str, Any] | None) -> None:
    if ref is not None:
        changes["raw_features_ref"] = ref
    assert isinstance(check(event(**changes)), Accepted | Rejected)


# -- the device's clock -----------------------------------------------------------------


def at(ahead_ms: int) -> dict[str, Any]:
    return event(ts_ms=ARRIVAL_MS + ahead_ms)


@pytest.mark.parametrize(
    ("ahead_ms", "reason"),
    [
        (DEFAULT_MAX_CLOCK_SKEW_S * 1000, None),  # exactly the allowed skew
        (DEFAULT_MAX_CLOCK_SKEW_S * 1000 + 1, "clock_ahead"),  # one millisecond more
        (2_500, None),  # a small skew: tagged as usual
        (0, None),
        (365 * 86_400_000, "clock_ahead"),  # a tablet set to next year
        (-1, None),
        (-25 * 365 * 86_400_000, None),  # far past: back-fills are legitimate
    ],
)
def test_clock_skew(ahead_ms: int, reason: str | None) -> None:
    result = check(at(ahead_ms))
    assert reason_of(result) == reason
    if isinstance(result, Accepted):
        assert result.ts_ms == ARRIVAL_MS + ahead_ms


def test_the_limit_is_a_parameter() -> None:
    assert Settings.model_fields["max_clock_skew_s"].default == DEFAULT_MAX_CLOCK_SKEW_S
    assert reason_of(check(at(1_000), max_clock_skew_s=1)) is None
    assert reason_of(check(at(1_001), max_clock_skew_s=1)) == "clock_ahead"
    assert reason_of(check(at(3_600_000), max_clock_skew_s=3600)) is None


def test_a_clock_refusal_says_what_to_fix() -> None:
    message = event(ts_ms=ARRIVAL_MS + 366 * 86_400_000, source="tablet_camera")
    raw = orjson.dumps(message)
    result = check_entry(ARRIVAL_ID, {b"data": raw})
    assert isinstance(result, Rejected) and result.reason == "clock_ahead"
    assert message["timestamp"] in result.detail and iso_ms(ARRIVAL_MS) in result.detail
    assert "31622400 s ahead" in result.detail
    assert "TAGGER_MAX_CLOCK_SKEW_S (300 s)" in result.detail
    assert "clock of the device behind source 'tablet_camera'" in result.detail
    assert result.data == raw


@pytest.mark.parametrize("entry_id", [b"1-0", b"42", b"0-1", b"", b"not-an-id"])
def test_an_id_not_made_by_a_server_clock_is_not_a_clock(entry_id: bytes) -> None:
    """Hand-given ids (tests, imports) say nothing about the time of arrival."""
    assert isinstance(check(at(365 * 86_400_000), entry_id=entry_id), Accepted)


def test_the_clock_is_the_arrival_not_the_sequence() -> None:
    ahead = DEFAULT_MAX_CLOCK_SKEW_S * 1000
    assert reason_of(check(at(ahead), entry_id=b"%d-99" % ARRIVAL_MS)) is None
    assert reason_of(check(at(ahead + 1), entry_id=b"%d-99" % ARRIVAL_MS)) == "clock_ahead"


@pytest.mark.parametrize("stamp", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_time_outside_the_calendar_in_utc_is_a_bad_timestamp(stamp: str) -> None:
    """Converting it to UTC overflows: a dead letter, not an exception out of the intake."""
    assert reason_of(check(event(timestamp=stamp))) == "bad_timestamp"


# -- against the server -----------------------------------------------------------------


def test_a_far_future_event_is_dead_lettered_and_the_session_goes_on(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    now = int(time.time() * 1000)
    first = event("tara14", now - 3 * MINUTE_MS)
    next_year = event("tara14", now + 365 * 86_400_000, source="tablet")
    later = [event("tara14", now - 2 * MINUTE_MS), event("tara14", now - MINUTE_MS)]
    soon = event("tara14", now + MINUTE_MS)  # a small skew (under 300 s): tagged as usual
    publish(client, settings, [first, next_year, *later, soon])
    counts = run_burst(settings, sinks=False)

    (dead,) = client.xrange(streams(settings).dead_letter_stream)
    assert dead[1][b"reason"] == b"clock_ahead"
    assert b"clock of the device behind source 'tablet'" in dead[1][b"detail"]
    assert orjson.loads(dead[1][b"data"]) == next_year
    assert dead[1][b"source_id"] == client.xrange(streams(settings).input_stream)[1][0]
    out = tagged(client, settings)
    assert [e["record_id"] for e in out] == [e["record_id"] for e in (first, *later, soon)]
    assert len({e["session_id"] for e in out}) == 1  # the user's session goes on
    assert [e["session_seq"] for e in out] == [1, 2, 3, 4]
    assert not any(e.get("late") for e in out)
    kinds = [e["kind"] for e in output(client, settings) if e["kind"] != "message"]
    assert "session.end" not in kinds
    assert (counts.tagged, counts.dead, counts.opened, counts.late) == (4, 1, 1, 0)


def test_the_setting_reaches_the_intake(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings(max_clock_skew_s=2 * 3600)
    publish(client, settings, [event("uma15", int(time.time() * 1000) + 60 * MINUTE_MS)])
    counts = run_burst(settings, sinks=False)
    assert (counts.tagged, counts.dead) == (1, 0)  # an hour ahead: within two hours' skew
