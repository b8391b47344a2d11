"""The JSONL audit log, read back from real files."""

import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from exporters.jsonl import JsonlSink, append_durably, record_ids_in
from exporters.paths import UnsafePath, session_log_path
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    output,
    publish,
    run_burst,
    streams,
    tagger_cmd,
    tagger_env,
)
from tests.test_parquet import check_each_output_entry_once

T0 = 1_750_000_000_000
MINUTE_MS = 60_000


def log_lines(settings: Settings) -> dict[Path, list[dict[str, Any]]]:
    """Every session log under the data dir, parsed line by line."""
    files = {}
    for path in sorted((settings.data_dir / "logs" / "users").glob("*/sessions/*.jsonl")):
        raw = path.read_bytes()
        assert raw.endswith(b"\n") and b"\n\n" not in raw
        files[path] = [orjson.loads(line) for line in raw.splitlines()]
    return files


def test_burst_writes_one_file_per_session_in_stream_order(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    events = [event(u, T0 + m * MINUTE_MS) for m in (0, 1, 30) for u in ("elias01", "mira02")]
    events.append(event("elias01", T0 + 31 * MINUTE_MS, note="line one\nline two"))
    publish(client, settings, events)
    run_burst(settings)

    files = log_lines(settings)
    by_session: dict[str, list[dict[str, Any]]] = {}
    for e in output(client, settings):
        by_session.setdefault(e["session_id"], []).append(e)
    assert len(files) == len(by_session) == 4
    for path, lines in files.items():
        user, sid = path.parts[-3], path.stem
        assert path == session_log_path(settings.data_dir, user, sid)
        assert all(set(line) == {"recorded_at", "event"} for line in lines)
        assert all(line["recorded_at"].endswith("Z") for line in lines)
        expected = by_session[sid]
        assert [line["event"].get("kind", "message") for line in lines] == [
            e.pop("kind") if e.get("kind") == "message" else e["kind"] for e in expected
        ]
        assert [line["event"] for line in lines] == expected
    for root in (settings.data_dir / "logs", settings.data_dir / "parquet"):
        assert root.is_dir()
        for p in [root, *root.rglob("*")]:  # files private to the service, dirs too
            assert stat.S_IMODE(p.stat().st_mode) == (0o700 if p.is_dir() else 0o600), p
    closed = [lines for lines in files.values() if lines[-1]["event"].get("kind") == "session.end"]
    assert len(closed) == 2 and all(ls[0]["event"]["kind"] == "session.start" for ls in closed)
    newline_line = next(ln for ls in files.values() for ln in ls if "note" in ln["event"])
    assert newline_line["event"]["note"] == "line one\nline two"


def test_torn_last_line_is_repaired_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"recorded_at":"x","event":{"record_id":"a"}}\n{"recorded_at":"x","ev')
    append_durably(path, b'{"recorded_at":"y","event":{"record_id":"b"}}\n')
    assert [orjson.loads(x)["event"]["record_id"] for x in path.read_bytes().splitlines()] == [
        "a",
        "b",
    ]
    assert record_ids_in(path) == {"a", "b"}


def test_redelivered_entries_are_not_written_twice(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    fields = {b"user_id": b"elias01", b"session_id": b"sess_00000000000000aa"}
    entries = [(f"{i}-0".encode(), {**fields, b"data": orjson.dumps(event())}) for i in range(3)]
    sink.add(entries[:2], recovering=False)
    sink.add(entries, recovering=True)  # a crash before the ack: all three come again
    path = session_log_path(tmp_path, "elias01", "sess_00000000000000aa")
    assert len(path.read_bytes().splitlines()) == 3


@pytest.mark.parametrize(
    ("user_id", "session_id"),
    [
        ("..", "sess_00000000000000aa"),
        ("a/b", "sess_00000000000000aa"),
        ("elias01", "../../etc"),
        ("elias01", "sess_00000000000000AA"),
        ("x" * 65, "sess_0"),
    ],
)
def test_unsafe_ids_build_no_path(tmp_path: Path, user_id: str, session_id: str) -> None:
    with pytest.raises(UnsafePath):
        session_log_path(tmp_path, user_id, session_id)


def test_a_planted_symlink_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = tmp_path / "data"
    (data / "logs" / "users" / "elias01").mkdir(parents=True)
    os.symlink(outside, data / "logs" / "users" / "elias01" / "sessions")
    with pytest.raises(UnsafePath):
        session_log_path(data, "elias01", "sess_00000000000000aa")


def test_kill_9_of_the_sinks_loses_and_doubles_nothing(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(batch_size=200, sink_lease_ms=500)
    users = [f"user{n}" for n in range(4)]
    publish(client, settings, [event(u, T0 + i * 1000) for i in range(1500) for u in users])
    run_burst(settings, sinks=False)
    env = tagger_env(settings)
    total = client.xlen(streams(settings).output_stream)
    for _ in range(3):  # kill three sinks part-way through
        before = lines_on_disk(settings)
        sink = subprocess.Popen(
            tagger_cmd("run", "--sinks-only"), env=env, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while lines_on_disk(settings) < before + 500:
            assert time.monotonic() < deadline, "the sink made no progress"
            time.sleep(0.005)
        sink.kill()
        sink.wait()
    assert lines_on_disk(settings) < total
    done = subprocess.run(
        tagger_cmd("run", "--burst", "--sinks-only"), env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    written = [line["event"]["record_id"] for ls in log_lines(settings).values() for line in ls]
    expected = [e["record_id"] for e in output(client, settings)]
    assert len(written) == len(set(written))
    assert sorted(written) == sorted(expected)
    check_each_output_entry_once(client, settings)  # the Parquet sink died alongside


def lines_on_disk(settings: Settings) -> int:
    root = settings.data_dir / "logs" / "users"
    return sum(p.read_bytes().count(b"\n") for p in root.glob("*/sessions/*.jsonl"))


def test_a_failed_write_acks_nothing_and_stops_the_worker(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    publish(client, settings, [event("ana01", T0 + i * 1000) for i in range(20)])
    obstacle = settings.data_dir / "logs" / "users" / "ana01"
    obstacle.parent.mkdir(parents=True)
    obstacle.write_text("a file where the sink needs a directory")  # every write fails
    env = tagger_env(settings)

    failed = subprocess.run(
        tagger_cmd("run", "--burst"), env=env, capture_output=True, text=True, timeout=120
    )
    assert failed.returncode == 1
    assert "nothing unstored was acked" in failed.stderr
    jsonl_group = next(
        g
        for g in client.xinfo_groups(streams(settings).output_stream)
        if g["name"].endswith(b"-jsonl")
    )
    assert jsonl_group["pending"] + jsonl_group["lag"] == client.xlen(
        streams(settings).output_stream
    )

    obstacle.unlink()  # the operator fixes the cause and restarts
    done = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert lines_on_disk(settings) == client.xlen(streams(settings).output_stream)  # 20 and a start
