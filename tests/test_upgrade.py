"""An existing deployment upgrades in place: state written by the previous release's own
code (its session script, kept as tests/fixtures/sessions_0_1.lua) is read and carried on
by the partition owner, with the same sessions, figures and boundaries."""

import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from tagger.intake import Accepted, check_entry
from tagger.keys import Keys
from tagger.registry import get_session
from tagger.rules.state import state_version
from tagger.settings import Settings
from tagger.times import iso_ms
from tests.conftest import SettingsFactory, event, output, publish, run_burst, tagged

PREVIOUS_RELEASE_SCRIPT = (Path(__file__).parent / "fixtures" / "sessions_0_1.lua").read_text()
T0 = 1_750_000_000_000
MINUTE_MS = 60_000


def previous_release(client: Redis, settings: Settings, op: str, args: list[Any]) -> Any:
    keys = Keys.from_settings(settings)
    common = [
        op, settings.group, settings.session_timeout_s * 1000, settings.max_session_s * 1000,
        settings.dedup_window_s * 1000, keys.session_prefix, keys.user_prefix,
    ]  # fmt: skip
    return client.eval(PREVIOUS_RELEASE_SCRIPT, 10, *keys.script_keys()[:10], *common, *args)


def tag_as_the_previous_release(client: Redis, settings: Settings) -> None:
    """Read the input as that release's worker did and tag it with its script."""
    keys = Keys.from_settings(settings)
    ((_stream, entries),) = client.xreadgroup(settings.group, "old", {keys.input_stream: ">"})
    meta: list[Any] = []
    heads = []
    for entry_id, fields in entries:
        a = check_entry(entry_id, fields)
        assert isinstance(a, Accepted)
        meta += [entry_id.decode(), a.user_id, a.record_id, a.ts_ms, "", a.modality, a.source]
        heads.append(a.head)
    args = [entries[0][0], entries[-1][0], len(heads), orjson.dumps(meta), *heads]
    assert previous_release(client, settings, "tag", args)[0] == len(heads)


def start_as_the_previous_release(client: Redis, settings: Settings, user: str, ts: int) -> str:
    keys = Keys.from_settings(settings)
    client.xadd(keys.control_stream, {"data": b"{}"})
    ((_stream, ((entry_id, _),)),) = client.xreadgroup(
        settings.group, "old", {keys.control_stream: ">"}
    )
    args = [entry_id, "start", str(uuid.uuid4()), user, "carer01", ts, "",
            "with carer, miming", "1", "help", "0"]  # fmt: skip
    status, sid, _reason = previous_release(client, settings, "control", args)
    assert status == b"ok"
    return str(sid.decode())


def test_state_of_the_previous_release_is_carried_on(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300, max_clock_skew_s=2 * 3600)  # now + 60 min
    keys = Keys.from_settings(settings)
    for stream in (keys.input_stream, keys.control_stream):
        client.xgroup_create(stream, settings.group, id="0", mkstream=True)
    publish(client, settings, [
        event("ana01", T0, source="cam_a"), event("ana01", T0 + MINUTE_MS, modality="audio"),
        event("ben02", T0), event("ana01", T0 - 1000),  # late: joins ana01's session
    ])  # fmt: skip
    tag_as_the_previous_release(client, settings)
    now = int(time.time() * 1000)
    carol = start_as_the_previous_release(client, settings, "cleo03", now)
    assert {state_version(v) for v in client.hvals(keys.active)} == {3}
    old = {e["user_id"]: e["session_id"] for e in tagged(client, settings)}

    publish(client, settings, [
        event("ana01", T0 + 2 * MINUTE_MS),  # goes on: seq 4
        event("ben02", T0 + 60 * MINUTE_MS),  # past the timeout: closes the old session
        event("cleo03", now + 1000),  # joins the session the old release started
        event("cleo03", now + 60 * MINUTE_MS),  # closes it: the end repeats its metadata
    ])  # fmt: skip
    run_burst(settings, sinks=False)

    new = tagged(client, settings)[4:]
    assert (new[0]["session_id"], new[0]["session_seq"]) == (old["ana01"], 4)
    assert new[1]["session_id"] != old["ben02"]
    assert (new[2]["session_id"], new[2]["session_seq"]) == (carol, 1)
    ana = get_session(client, Keys.every_partition(settings), old["ana01"])
    assert ana is not None and ana["status"] == "active"
    assert (ana["events"], ana["late_events"], ana["first_event_ms"]) == (4, 1, T0 - 1000)
    assert ana["modality"] == {"gesture": 3, "audio": 1}
    assert ana["source"] == {"cam_a": 1, "gesture_classifier": 3}
    ends = {e["session_id"]: e for e in output(client, settings) if e["kind"] == "session.end"}
    assert ends[old["ben02"]]["event_count"] == 1
    assert ends[old["ben02"]]["end_time"] == iso_ms(T0)
    assert ends[carol]["session_notes"] == "with carer, miming"
    assert ends[carol]["training_intent_label"] == "help" and ends[carol]["event_count"] == 1
    assert {state_version(v) for v in client.hvals(keys.active)} == {4}
