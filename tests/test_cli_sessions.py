"""`tagger sessions list` and `show`: the API's SessionSummary, read as well at 80 columns."""

import io
import re
import subprocess
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from redis import Redis
from rich.console import Console

from schemas.api import SessionSummary
from tagger.cli_sessions import duration_text, session_table, session_view
from tests.conftest import SettingsFactory, event, publish, run_burst, tagger_cmd, tagger_env

T0 = 1_750_000_000_000  # 2025-06-15 15:06:40 UTC
MINUTE_MS = 60_000
HEADERS = ["session", "user", "started (UTC)", "duration", "events", "ended"]


def _render(renderable: Any, width: int = 80) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


def _rows(screen: str) -> dict[str, str]:
    """`show`'s lines after the title, as key -> value (two spaces or more between)."""
    pairs = (re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in screen.splitlines()[1:])
    return {key: value for key, value in pairs}


def _summary(**fields: Any) -> SessionSummary:
    registry = {
        "session_id": "sess_0123456789abcdef",
        "user_id": "elias01",
        "status": "closed",
        "start_ms": T0,
        "end_ms": T0 + 250_000,
        "last_ms": T0 + 250_000,
        "first_event_ms": T0,
        "last_event_ms": T0 + 250_000,
        "events": 12,
        "late_events": 2,
        "close_reason": "timeout",
        "closed_by": "system",
        "opened_by": "carer01",
        "is_training_data": True,
        "training_intent_label": "hungry",
        "session_notes": "after lunch [red]not markup[/red]",
        "modality": {"gesture": 10, "speech": 2},
        "source": {"gesture_classifier": 10, "asr": 2},
        **fields,
    }
    return SessionSummary.from_registry(registry)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0, "0 s"),
        (42.9, "42 s"),
        (250, "4 min 10 s"),
        (65, "1 min 05 s"),
        (3600 + 150, "1 h 02 min"),
        (26 * 3600, "26 h 00 min"),
    ],
)
def test_durations_read_as_people_say_them(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text


def test_the_list_fits_80_columns_with_whole_headers() -> None:
    rows = [
        _summary(),
        _summary(
            session_id="sess_fedcba9876543210",
            user_id="mira02",
            status="active",
            end_ms=None,
            close_reason=None,
            last_event_ms=T0 + 62 * MINUTE_MS,
            events=1234,
        ),
        _summary(session_id="sess_00000000000000ff", close_reason="max_duration"),
    ]
    screen = _render(session_table(rows))
    lines = screen.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert "…" not in screen
    assert lines[0].split() == [w for h in HEADERS for w in h.split()]  # one line, whole
    first, active, longest = lines[2:5]
    assert first.split() == [
        "sess_0123456789abcdef",
        "elias01",
        "2025-06-15",
        "15:06",
        "4",
        "min",
        "10",
        "s",
        "12",
        "timeout",
    ]
    assert active.split()[-5:] == ["h", "02", "min", "1234", "active"]
    assert longest.split()[-1] == "max" and lines[5].split() == ["duration"]  # wraps, whole


def test_a_long_user_id_folds_and_headers_stay_whole() -> None:
    screen = _render(session_table([_summary(user_id="a-very-long-user-name-of-forty-chars-x01")]))
    assert all(len(line) <= 80 for line in screen.splitlines())
    assert "…" not in screen
    assert screen.splitlines()[0].split() == [w for h in HEADERS for w in h.split()]
    assert "sess_0123456789abcdef" in screen  # the id whole, to be copied


def test_show_reads_as_key_and_value_without_internal_fields() -> None:
    screen = _render(session_view(_summary()))
    assert "_ms" not in screen and "…" not in screen
    assert all(len(line) <= 80 for line in screen.splitlines())
    rows = _rows(screen)
    assert screen.splitlines()[0].strip() == "session sess_0123456789abcdef"
    assert rows == {
        "user": "elias01",
        "status": "closed",
        "started": "2025-06-15 15:06:40 UTC",
        "ended": "2025-06-15 15:10:50 UTC",
        "last event": "2025-06-15 15:10:50 UTC",
        "duration": "4 min 10 s",
        "events": "12",
        "late events": "2",
        "how it ended": "timeout, by system",
        "opened by": "carer01",
        "training": "yes, intent label hungry",
        "notes": "after lunch [red]not markup[/red]",
        "by modality": "gesture 10, speech 2",
        "by source": "gesture_classifier 10, asr 2",
    }


def test_show_of_an_active_session_without_events() -> None:
    summary = _summary(
        status="active",
        end_ms=None,
        close_reason=None,
        closed_by=None,
        last_event_ms=-1,
        events=0,
        late_events=0,
        is_training_data=False,
        training_intent_label="",
        session_notes="",
        modality={},
        source={},
    )
    rows = _rows(_render(session_view(summary)))
    assert "how it ended" not in rows
    assert rows["ended"] == "not yet (active)" and rows["last event"] == "none yet"
    assert rows["duration"] == "-" and rows["training"] == "no" and rows["notes"] == "-"
    assert rows["by modality"] == "-"


def test_list_and_show_against_the_server(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings(session_timeout_s=300)
    publish(
        client,
        settings,
        [
            event("elias01", T0),
            event("elias01", T0 + 250_000, modality="speech", source="asr"),
            event("elias01", T0 + 60 * MINUTE_MS),
            event("elias01", T0 + 62 * MINUTE_MS),
        ],
    )
    run_burst(settings)
    env = {**tagger_env(settings), "COLUMNS": "80"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            tagger_cmd("sessions", *args), env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    screen = cli("list")
    lines = screen.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in screen
    assert lines[0].split() == [w for h in HEADERS for w in h.split()]
    active, closed = lines[2].split(), lines[3].split()
    assert active[1:] == ["elias01", "2025-06-15", "16:06", "2", "min", "00", "s", "2", "active"]
    assert closed[1:] == ["elias01", "2025-06-15", "15:06", "4", "min", "10", "s", "2", "timeout"]

    listed = orjson.loads(cli("list", "--json"))
    assert [s["session_id"] for s in listed] == [active[0], closed[0]]
    for item in listed:
        summary = SessionSummary.model_validate(item)  # the API's model, whole
        assert item | summary.model_dump(mode="json") == item
        assert item["events"] == item["event_count"] == 2  # the earlier keys stay
    assert listed[1]["end_time"] == "2025-06-15T15:10:50.000Z"
    assert listed[1]["by_modality"] == listed[1]["modality"] == {"gesture": 1, "speech": 1}
    assert listed[1]["duration_s"] == 250.0 and listed[1]["start_ms"] == T0

    shown = cli("show", closed[0])
    assert "_ms" not in shown and "…" not in shown
    assert all(len(line) <= 80 for line in shown.splitlines())
    for expected in (
        "started       2025-06-15 15:06:40 UTC",
        "ended         2025-06-15 15:10:50 UTC",
        "duration      4 min 10 s",
        "how it ended  timeout, by system",
        "by modality   gesture 1, speech 1",
        "by source     asr 1, gesture_classifier 1",
    ):
        assert expected in shown
    as_json = orjson.loads(cli("show", closed[0], "--json"))
    assert as_json == listed[1]

    assert cli("list", "--user", "nobody99").strip() == "no sessions match"
    refused = subprocess.run(
        tagger_cmd("sessions", "show", "sess_0000000000000000"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1 and "unknown session" in refused.stderr


def test_times_are_utc() -> None:
    summary = _summary(start_ms=int(datetime(2025, 1, 2, 3, 4, tzinfo=UTC).timestamp() * 1000))
    assert "2025-01-02 03:04" in _render(session_table([summary]))


def test_show_of_a_closed_session_without_events() -> None:
    rows = _rows(_render(session_view(_summary(last_event_ms=-1, events=0))))
    assert rows["last event"] == "none" and rows["events"] == "0"
