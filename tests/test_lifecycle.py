"""Sessions as first-class records: boundaries, timeouts that fire alone, explicit control."""

import re
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from redis import Redis

from tagger.control import request
from tagger.keys import Keys
from tagger.registry import get_session, list_sessions, validate
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    output,
    publish,
    run_burst,
    tagged,
    tagger_cmd,
    tagger_env,
    wait_for,
)
from tests.reference import check_bracketing

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
T0 = 1_750_000_000_000
MINUTE_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


@contextmanager
def running_workers(settings: Settings, count: int = 1) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`tagger run` subprocesses for the duration of the block, then SIGKILLed."""
    env = tagger_env(settings)
    workers = [
        subprocess.Popen(tagger_cmd("run"), env=env, stderr=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield workers
    finally:
        for w in workers:
            w.kill()
            w.wait()


def boundaries(client: Redis, settings: Settings, kind: str) -> list[dict[str, Any]]:
    return [e for e in output(client, settings) if e.get("kind") == kind]


def test_boundary_events_bracket_each_session(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    events = [event("elias01", T0 + m * MINUTE_MS) for m in (0, 1, 2, 30, 31)]
    publish(client, settings, events)
    counts = run_burst(settings)
    out = output(client, settings)
    assert [e.get("kind", "message") for e in out] == [
        "session.start",
        "message",
        "message",
        "message",
        "session.end",
        "session.start",
        "message",
        "message",
    ]
    start, end = out[0], out[4]
    assert UUID4.match(start["record_id"]) and UUID4.match(end["record_id"])
    assert ISO_MS_Z.match(start["timestamp"]) and abs(_ms(start["timestamp"]) - now_ms()) < 60_000
    assert start["source"] == end["source"] == "session_manager"
    assert start["performer_id"] == end["performer_id"] == "system"
    assert start["start_time"] == events[0]["timestamp"]
    assert start["is_training_data"] is False and start["session_notes"] is None
    assert end["close_reason"] == "timeout"
    assert end["end_time"] == end["last_event_time"] == events[2]["timestamp"]
    assert end["first_event_time"] == events[0]["timestamp"]
    assert end["event_count"] == 3
    assert [e["session_seq"] for e in out if "session_seq" in e] == [1, 2, 3, 1, 2]
    assert (counts.opened, counts.closed) == (2, 1)
    check_bracketing(out)


def test_max_duration_closes_with_its_reason(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings(session_timeout_s=300, max_session_s=600)
    publish(client, settings, [event("mira02", T0 + m * MINUTE_MS) for m in range(0, 13, 2)])
    run_burst(settings)
    (end,) = boundaries(client, settings, "session.end")
    assert end["close_reason"] == "max_duration"


def test_idle_session_closes_without_new_events(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=1, sweep_interval_ms=100)
    events = [event("jonas03", now_ms() + i) for i in range(3)]
    publish(client, settings, events)
    with running_workers(settings):
        (end,) = wait_for(lambda: boundaries(client, settings, "session.end"), timeout_s=30)
    assert end["close_reason"] == "timeout"
    assert end["end_time"] == events[-1]["timestamp"]  # the last event's time, not the sweep's
    assert end["event_count"] == 3
    session = get_session(client, Keys.every_partition(settings), end["session_id"])
    assert session is not None and session["status"] == "closed"
    assert session["close_reason"] == "timeout"


def test_two_workers_close_each_session_exactly_once(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=1, sweep_interval_ms=50)
    users = [f"user{n:02d}" for n in range(20)]
    with running_workers(settings, count=2):
        publish(client, settings, [event(u, now_ms()) for u in users for _ in range(3)])
        wait_for(lambda: len(boundaries(client, settings, "session.end")) >= len(users))
        time.sleep(1.0)  # room for a second, wrong close to show up
    ends = boundaries(client, settings, "session.end")
    assert sorted(e["user_id"] for e in ends) == users
    check_bracketing(output(client, settings))


def test_open_session_survives_a_worker_restart(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=2, sweep_interval_ms=100)
    first = event("aylin04", now_ms())
    with running_workers(settings):
        publish(client, settings, [first])
        wait_for(lambda: tagged(client, settings))
    # The worker was SIGKILLed with the session open; a new one carries on with it.
    publish(client, settings, [event("aylin04", now_ms())])
    with running_workers(settings):
        wait_for(lambda: boundaries(client, settings, "session.end"))
    out = output(client, settings)
    assert len({e["session_id"] for e in out}) == 1
    assert [e.get("kind", "message") for e in out] == [
        "session.start",
        "message",
        "message",
        "session.end",
    ]


def test_the_sweep_waits_for_events_still_in_the_stream(
    client: Redis, make_settings: SettingsFactory, server_url: str
) -> None:
    """A takeover waits out the dead owner's lease, which may be longer than the timeout:
    an event sent in time but not read yet keeps its user's session open."""
    import asyncio

    from tagger.connect import async_client
    from tagger.runtime import Checked, PartitionOwner
    from tagger.worker import ensure_group

    settings = make_settings(session_timeout_s=1)
    keys = Keys.from_settings(settings)

    async def sweep_with_an_event_waiting() -> tuple[int, int]:
        aclient = async_client(server_url)
        await ensure_group(aclient, keys)
        owner = PartitionOwner(aclient, settings, keys, "c")
        assert await owner.hold()
        await owner.load()

        async def read_and_tag() -> None:
            got = await aclient.xreadgroup(settings.group, "c", {keys.input_stream: ">"})
            await owner.tag(Checked(keys, got[0][1]))

        publish(client, settings, [event("aylin04", now_ms())])
        await read_and_tag()
        publish(client, settings, [event("aylin04", now_ms())])  # in time, not read yet
        await asyncio.sleep(1.3)  # the first event's deadline passes
        swept_while_waiting = await owner.sweep()
        await read_and_tag()
        await asyncio.sleep(1.3)
        swept_after = await owner.sweep()
        await owner.release()
        await aclient.aclose()
        return swept_while_waiting, swept_after

    assert asyncio.run(sweep_with_an_event_waiting()) == (0, 1)
    out = output(client, settings)
    assert len({e["session_id"] for e in out}) == 1
    assert [e.get("kind", "message") for e in out] == [
        "session.start",
        "message",
        "message",
        "session.end",
    ]


def test_a_control_request_is_answered_on_the_first_try(
    client: Redis, make_settings: SettingsFactory, tmp_path: Any
) -> None:
    """Not by the recovery after a failed first try (which answered too, later)."""
    settings = make_settings()
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=stderr)
        try:
            keys = Keys.every_partition(settings)
            assert request(client, keys, "start", "noah05", performer_id="carer01").status == "ok"
        finally:
            worker.terminate()
            worker.wait()
    text = log.read_text()
    assert "control" in text and "ok started" in text
    assert "batch failed" not in text and "took over" not in text, text


def test_explicit_start_and_end(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    keys = Keys.every_partition(settings)
    with running_workers(settings):
        started = request(
            client,
            keys,
            "start",
            "noah05",
            performer_id="carer01",
            session_notes="Training with carer miming",
            is_training_data=True,
            training_intent_label="help",
        )
        assert (started.status, started.reason) == ("ok", "started")
        again = request(client, keys, "start", "noah05", performer_id="carer01")
        assert (again.session_id, again.reason) == (started.session_id, "already_active")
        sid = started.session_id

        publish(client, settings, [event("noah05", now_ms())])
        wait_for(lambda: tagged(client, settings))
        assert tagged(client, settings)[0]["session_id"] == sid

        assert (
            request(client, keys, "end", "lena06", performer_id="carer01", session_id=sid).reason
            == "forbidden"
        )
        unknown = request(
            client,
            keys,
            "end",
            "noah05",
            performer_id="carer01",
            session_id="sess_0000000000000000",
        )
        assert (unknown.status, unknown.reason) == ("error", "not_found")
        ended = request(client, keys, "end", "noah05", performer_id="carer01", session_id=sid)
        assert (ended.status, ended.reason) == ("ok", "ended")
        twice = request(client, keys, "end", "noah05", performer_id="carer01", session_id=sid)
        assert (twice.status, twice.reason) == ("error", "already_closed")

    start, end = (
        boundaries(client, settings, "session.start"),
        boundaries(client, settings, "session.end"),
    )
    assert len(start) == len(end) == 1
    assert start[0]["performer_id"] == "carer01"
    assert start[0]["is_training_data"] is True
    assert start[0]["training_intent_label"] == "help"
    assert start[0]["session_notes"] == "Training with carer miming"
    assert (end[0]["close_reason"], end[0]["performer_id"]) == ("explicit", "carer01")
    session = get_session(client, keys, sid)
    assert session is not None
    assert session["status"] == "closed" and session["events"] == 1
    assert session["modality"] == {"gesture": 1}
    assert session["source"] == {"gesture_classifier": 1}


def test_supersede_and_refused_requests(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    keys = Keys.every_partition(settings)
    with running_workers(settings):
        first = request(client, keys, "start", "omar07", performer_id="carer02")
        second = request(client, keys, "start", "omar07", performer_id="carer02", supersede=True)
        assert second.reason == "superseded" and second.session_id != first.session_id
        bad = request(
            client, keys, "start", "omar07", performer_id="carer02", is_training_data=True
        )
        assert bad.status == "error" and bad.reason.startswith("invalid_request")
    (end,) = boundaries(client, settings, "session.end")
    assert (end["session_id"], end["close_reason"]) == (first.session_id, "superseded")


def test_incoming_session_id_of_the_active_session_is_kept(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    publish(client, settings, [event("sofia08", T0)])
    run_burst(settings)
    sid = tagged(client, settings)[0]["session_id"]
    publish(
        client,
        settings,
        [
            event("sofia08", T0 + 1000, session_id=sid),
            event("sofia08", T0 + 2000, session_id="sess_1111111111111111"),
        ],
    )
    counts = run_burst(settings)
    second, third = tagged(client, settings)[1:]
    assert second["session_id"] == third["session_id"] == sid
    assert "upstream_session_id" not in second
    assert third["upstream_session_id"] == "sess_1111111111111111"
    assert counts.upstream_mismatch == 1


def test_late_events_join_the_session_they_fit(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    first_session = [event("lena06", T0 + m * MINUTE_MS) for m in (0, 1, 2)]
    second_session = [event("lena06", T0 + m * MINUTE_MS) for m in (30, 31)]
    late = event("lena06", T0 + 3 * MINUTE_MS)  # fits the first (closed) session
    very_late = event("lena06", T0 - 600 * MINUTE_MS)  # older than anything known
    publish(client, settings, [*first_session, *second_session, late, very_late])
    counts = run_burst(settings)
    out = tagged(client, settings)
    sessions = [e["session_id"] for e in out]
    assert sessions[5] == sessions[0] and out[5]["late"] is True and out[5]["session_seq"] == 4
    assert sessions[6] == sessions[0] and out[6]["late"] is True  # nearest known session
    assert counts.opened == 2 and counts.late == 2
    assert "late" not in out[0]
    check_bracketing(output(client, settings))


def test_registry_figures_of_an_active_session_are_live_and_kept_at_close(
    client: Redis, make_settings: SettingsFactory
) -> None:
    # An active session's figures ride in its state (sessions.lua, pack) until it closes.
    settings = make_settings(session_timeout_s=300)
    keys = Keys.every_partition(settings)
    publish(client, settings, [event("ines09", T0), event("ines09", T0 + MINUTE_MS)])
    run_burst(settings, sinks=False)
    publish(
        client,
        settings,
        [
            event("ines09", T0 + 2 * MINUTE_MS, modality="audio", source="sound_classifier"),
            event("ines09", T0 - 30_000),  # before the session's start: late, joins it
        ],
    )
    run_burst(settings, sinks=False)
    sid = tagged(client, settings)[0]["session_id"]
    live = get_session(client, keys, sid)
    expected = {
        "events": 4,
        "seq": 4,
        "late_events": 1,
        "first_event_ms": T0 - 30_000,
        "last_event_ms": T0 + 2 * MINUTE_MS,
        "modality": {"gesture": 3, "audio": 1},
        "source": {"gesture_classifier": 3, "sound_classifier": 1},
    }
    assert live is not None and live["status"] == "active"
    assert {k: live[k] for k in expected} == expected
    assert list_sessions(client, keys, user_id="ines09") == [live]

    publish(client, settings, [event("ines09", T0 + 60 * MINUTE_MS)])  # closes it (timeout)
    run_burst(settings, sinks=False)
    closed = get_session(client, keys, sid)
    assert closed is not None and closed["status"] == "closed"
    assert {k: closed[k] for k in expected} == expected
    (end,) = boundaries(client, settings, "session.end")
    assert end["event_count"] == 4


def seed_active_session(
    client: Redis, keys: Keys, user_id: str, registry: dict[str, Any], state: str | bytes
) -> None:
    """An active session as an earlier version left it: its registry hash, its index
    entries and its state in the active hash."""
    sid = registry["session_id"]
    client.hset(keys.session(sid), mapping={"user_id": user_id, "status": "active", **registry})
    client.zadd(keys.session_index, {sid: T0})
    client.zadd(keys.user_sessions(user_id), {sid: T0})
    client.hset(keys.active, user_id, state)


def test_a_session_state_of_the_earlier_text_form_goes_on_counting(
    client: Redis, make_settings: SettingsFactory
) -> None:
    # Before the binary state, a session's counters were written to the registry hash at
    # every batch and the active hash held "sid start_ms last_ms seq first_ms".
    settings = make_settings(session_timeout_s=300)
    keys = Keys.from_settings(settings)
    sid = "sess_00000000000000aa"
    registry = {
        "session_id": sid,
        "start_ms": T0,
        "events": 2,
        "seq": 2,
        "last_ms": T0 + MINUTE_MS,
        "first_event_ms": T0,
        "last_event_ms": T0 + MINUTE_MS,
        "modality:gesture": 2,
        "source:gesture_classifier": 2,
    }
    seed_active_session(client, keys, "tom10", registry, f"{sid} {T0} {T0 + MINUTE_MS} 2 {T0}")
    publish(client, settings, [event("tom10", T0 + 2 * MINUTE_MS)])
    run_burst(settings, sinks=False)
    (message,) = tagged(client, settings)
    assert (message["session_id"], message["session_seq"]) == (sid, 3)
    session = get_session(client, Keys.every_partition(settings), sid)
    assert session is not None
    assert (session["events"], session["last_event_ms"]) == (3, T0 + 2 * MINUTE_MS)
    assert session["modality"] == {"gesture": 3}
    assert session["source"] == {"gesture_classifier": 3}


def test_a_session_state_of_version_2_goes_on_counting(
    client: Redis, make_settings: SettingsFactory
) -> None:
    # Version 2 of the binary state held each counter by name ("value name \n"); version 3
    # holds numbers (K_NAMES). A session packed by version 2 is read, and goes on.
    settings = make_settings(session_timeout_s=300)
    keys = Keys.from_settings(settings)
    sid = "sess_00000000000000bb"
    records = {"late_events": 1, "modality:gesture": 2, "source:gesture_classifier": 3}
    state = struct.pack("<BddddBH", 2, T0, T0 + MINUTE_MS, 3, T0, len(sid), len(records))
    state += sid.encode()
    state += b"".join(struct.pack("<d", n) + name.encode() + b"\n" for name, n in records.items())
    registry = {"session_id": sid, "start_ms": T0}
    seed_active_session(client, keys, "una11", registry, state.ljust(72))
    publish(client, settings, [event("una11", T0 + 2 * MINUTE_MS, modality="audio")])
    run_burst(settings, sinks=False)
    (message,) = tagged(client, settings)
    assert (message["session_id"], message["session_seq"]) == (sid, 4)
    expected = {
        "events": 4,
        "late_events": 1,
        "modality": {"gesture": 2, "audio": 1},
        "source": {"gesture_classifier": 4},
    }
    live = get_session(client, Keys.every_partition(settings), sid)
    assert live is not None and {k: live[k] for k in expected} == expected
    publish(client, settings, [event("una11", T0 + 60 * MINUTE_MS)])  # closes it (timeout)
    run_burst(settings, sinks=False)
    closed = get_session(client, Keys.every_partition(settings), sid)
    assert closed is not None and closed["status"] == "closed"
    assert {k: closed[k] for k in expected} == expected


def test_counter_names_past_the_last_number_count_together(
    client: Redis, make_settings: SettingsFactory
) -> None:
    # A state holds a counter's number in two bytes; a producer sending ever new sources
    # must not make the names hash grow without end.
    settings = make_settings(session_timeout_s=300)
    keys = Keys.from_settings(settings)
    # Numbers are given as names first come: modality:gesture and source:cam_a take the
    # last two, cam_b and cam_c count together.
    client.hset(keys.counter_names, "#last", 65532)
    sources = ["cam_a", "cam_b", "cam_c"]
    publish(client, settings, [event("vera12", T0 + i, source=s) for i, s in enumerate(sources)])
    run_burst(settings, sinks=False)
    sid = tagged(client, settings)[0]["session_id"]
    overflow = "(more counter names than a partition numbers)"
    expected = {"modality": {"gesture": 3}, "source": {"cam_a": 1, overflow: 2}}
    live = get_session(client, Keys.every_partition(settings), sid)
    assert live is not None and {k: live[k] for k in expected} == expected
    names = {k.decode() for k in client.hkeys(keys.counter_names)}
    assert "source:cam_a" in names and not {"source:cam_b", "source:cam_c"} & names
    publish(client, settings, [event("vera12", T0 + 60 * MINUTE_MS)])  # closes it (timeout)
    run_burst(settings, sinks=False)
    closed = get_session(client, Keys.every_partition(settings), sid)
    assert closed is not None and {k: closed[k] for k in expected} == expected


def test_a_session_with_thousands_of_counters_keeps_them(
    client: Redis, make_settings: SettingsFactory
) -> None:
    # More counters than one struct call of the script packs (sessions.lua, VALUES_CHUNK).
    settings = make_settings(session_timeout_s=300)
    events = [event("wim13", T0 + i, source=f"mod{i:04d}") for i in range(4100)]
    publish(client, settings, events)
    run_burst(settings, sinks=False)
    publish(client, settings, [event("wim13", T0 + 5000, source="mod0000")])
    run_burst(settings, sinks=False)
    sid = tagged(client, settings)[0]["session_id"]
    live = get_session(client, Keys.every_partition(settings), sid)
    assert live is not None and live["events"] == 4101
    assert live["source"] == {f"mod{i:04d}": 2 if i == 0 else 1 for i in range(4100)}


def test_registry_queries_and_cli(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings(session_timeout_s=300)
    keys = Keys.every_partition(settings)
    publish(
        client,
        settings,
        [
            event("elias01", T0),
            event("elias01", T0 + 60 * MINUTE_MS),
            event("mira02", T0 + MINUTE_MS),
        ],
    )
    run_burst(settings)
    everything = list_sessions(client, keys)
    assert [s["user_id"] for s in everything] == ["elias01", "mira02", "elias01"]  # newest first
    closed, active = everything[2], everything[0]
    assert list_sessions(client, keys, status="closed") == [closed]
    assert [
        s["session_id"] for s in list_sessions(client, keys, user_id="elias01", limit=1, offset=1)
    ] == [closed["session_id"]]
    assert list_sessions(client, keys, since_ms=T0 + 2 * MINUTE_MS) == [active]
    assert validate(client, keys, "elias01", active["session_id"]) == "active"
    assert validate(client, keys, "elias01", closed["session_id"]) == "closed"
    assert validate(client, keys, "mira02", closed["session_id"]) == "invalid"
    assert validate(client, keys, "elias01", "sess_" + uuid.uuid4().hex[:16]) == "invalid"

    env = {**tagger_env(settings), "COLUMNS": "200"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            tagger_cmd("sessions", *args), env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listed = orjson.loads(cli("list", "--user", "elias01", "--status", "closed", "--json"))
    assert [s["session_id"] for s in listed] == [closed["session_id"]]
    assert listed[0]["close_reason"] == "timeout" and listed[0]["events"] == 1
    assert cli("validate", "--user", "elias01", active["session_id"]).strip() == "active"
    shown = orjson.loads(cli("show", active["session_id"], "--json"))
    assert shown["status"] == "active" and shown["modality"] == {"gesture": 1}
    assert active["session_id"] in cli("list", "--since", "2025-06-15T00:00:00Z")


def _ms(iso_text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso_text).timestamp() * 1000)


def test_cli_start_and_end(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    env = tagger_env(settings)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            tagger_cmd("sessions", *args), env=env, capture_output=True, text=True, timeout=60
        )

    with running_workers(settings):
        started = cli(
            "start",
            "--user",
            "elias01",
            "--performer",
            "carer01",
            "--training-label",
            "hungry",
            "--notes",
            "after lunch",
        )
        assert started.returncode == 0, started.stderr
        sid, reason = started.stdout.split()
        assert reason == "started"
        refused = cli("end", sid, "--user", "mira02")
        assert refused.returncode == 1 and "forbidden" in refused.stderr
        ended = cli("end", sid, "--user", "elias01", "--performer", "carer01")
        assert ended.returncode == 0 and ended.stdout.split() == [sid, "ended"]
    session = get_session(client, Keys.every_partition(settings), sid)
    assert session is not None
    assert session["training_intent_label"] == "hungry" and session["is_training_data"] is True
    assert session["session_notes"] == "after lunch" and session["close_reason"] == "explicit"


def test_cli_start_without_a_running_tagger_says_what_to_do(make_settings: SettingsFactory) -> None:
    env = tagger_env(make_settings())
    done = subprocess.run(
        tagger_cmd("sessions", "start", "--user", "elias01", "--wait", "1"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "tagger run" in done.stderr
    assert "within 1 s" in done.stderr
