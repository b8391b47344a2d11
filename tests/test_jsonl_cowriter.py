"""A second writer of the session logs: upstream A3CP's schema_recorder appends to the same
files, one write() per line, O_APPEND, under flock(LOCK_EX) held from open to close."""

import errno
import fcntl
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from exporters.jsonl import APPEND_RECORD, JsonlSink, append_durably, events_in, record_ids_in
from exporters.paths import make_dirs, session_log_path
from tests.conftest import (
    SettingsFactory,
    event,
    output,
    publish,
    run_burst,
    tagger_cmd,
    tagger_env,
)

T0 = 1_750_000_000_000
KIB = 1024

# Upstream's append_bytes (apps/schema_recorder/repository.py), line after line: open with
# O_APPEND, flock(LOCK_EX), one os.write of the whole line, close (which unlocks). It
# starts once the sink has written the file's first line, and paces itself by argv[3] s.
CO_WRITER = r"""
import fcntl, os, sys, time
target, lines_file, gap_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
lines = open(lines_file, "rb").read().splitlines(keepends=True)
deadline = time.monotonic() + 120
while not (os.path.exists(target) and os.path.getsize(target) > 0):
    if time.monotonic() > deadline:
        sys.exit("the sink never wrote")
    time.sleep(0.001)
for line in lines:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.write(fd, line) != len(line):
            sys.exit("short write")
    finally:
        os.close(fd)
    time.sleep(gap_s)
"""


def upstream_line(user_id: str, session_id: str, size: int, rng: random.Random) -> bytes:
    """A line as upstream's recorder writes it ({"recorded_at", "event"}, compact JSON),
    `size` bytes long with its newline (upstream allows up to 512 KiB)."""
    message = event(
        user_id, T0, session_id=session_id, record_id=str(uuid.UUID(int=rng.getrandbits(128)))
    )
    head = orjson.dumps({"recorded_at": "2025-06-15T12:00:00.000Z", "event": message})
    pad = size - len(head) - len(b',"landmarks":""') - 1
    body = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=pad))
    line = head[:-2] + b',"landmarks":"' + body.encode() + b'"}}\n'
    assert len(line) == size and size <= 512 * KIB
    return line


def test_a_co_writer_under_flock_loses_no_line_and_the_sink_none(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """The issue's run: 240 upstream-sized lines (256 to 512 KiB) appended under flock while
    the real sink writes 1,501 tagged events, one append each, to the same file. Before
    the lock the sink's unlocked repair saw a line half-written and cut it: lines lost."""
    settings = make_settings(batch_size=1, session_timeout_s=3600)
    publish(client, settings, [event("elias01", T0 + i * 1000) for i in range(1500)])
    run_burst(settings, sinks=False)
    expected = output(client, settings)
    (sid,) = {e["session_id"] for e in expected}
    path = session_log_path(settings.data_dir, "elias01", sid)
    make_dirs(path)  # upstream's session_manager makes the session's directory

    rng = random.Random(17)
    theirs = [
        upstream_line("elias01", sid, rng.randint(256 * KIB, 512 * KIB), rng) for _ in range(240)
    ]
    lines_file = tmp_path / "co_writer_lines"
    lines_file.write_bytes(b"".join(theirs))
    co_writer = subprocess.Popen(
        [sys.executable, "-c", CO_WRITER, str(path), str(lines_file), "0.008"],
        stderr=subprocess.PIPE,
    )
    try:
        sink = subprocess.run(
            tagger_cmd("run", "--burst", "--sinks-only"),
            env=tagger_env(settings),
            capture_output=True,
            timeout=300,
        )
        assert sink.returncode == 0, sink.stderr.decode()[-2000:]
        _, co_err = co_writer.communicate(timeout=120)
        assert co_writer.returncode == 0, co_err.decode()
    finally:
        if co_writer.poll() is None:
            co_writer.kill()
            co_writer.wait()

    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    known = {line[:-1] for line in theirs}
    of_theirs = Counter(line for line in lines if line in known)
    ours = [orjson.loads(line) for line in lines if line not in known]  # each one parses
    assert all(set(line) == {"recorded_at", "event"} for line in ours)
    lost = len(known - of_theirs.keys())
    assert lost == 0, f"{lost} of the co-writer's {len(known)} lines lost"
    assert set(of_theirs.values()) == {1}
    assert sorted(orjson.dumps(line["event"]) for line in ours) == sorted(
        orjson.dumps({k: v for k, v in e.items() if not (k == "kind" and v == "message")})
        for e in expected
    )
    # The two wrote at the same time: the co-writer's lines sit among the sink's.
    where = [n for n, line in enumerate(lines) if line in known]
    assert where[0] > 0 and where[-1] - where[0] >= len(where), "the writers did not overlap"


def test_a_live_co_writers_half_written_line_is_waited_for_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    ours = b'{"recorded_at":"y","event":{"record_id":"ours"}}\n'
    theirs = upstream_line("elias01", "sess_00000000000000aa", 300 * KIB, random.Random(1))
    co = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    fcntl.flock(co, fcntl.LOCK_EX)
    os.write(co, theirs[: len(theirs) // 2])  # the co-writer is mid-line, holding the lock
    sink = threading.Thread(target=append_durably, args=(path, ours))
    sink.start()
    time.sleep(0.3)
    assert sink.is_alive(), "the sink appended without the co-writer's lock"
    os.write(co, theirs[len(theirs) // 2 :])
    os.close(co)  # unlocks
    sink.join(10)
    assert path.read_bytes() == theirs + ours


def records_kept(directory: Path) -> bool:
    """Whether the filesystem keeps the user xattr the sink records its appends in."""
    probe = directory / "xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, APPEND_RECORD, b"0 0")
        return True
    except OSError:
        return False
    finally:
        probe.unlink()


needs_records = pytest.mark.skipif(
    not records_kept(Path(tempfile.gettempdir())), reason="no user xattrs on the temp fs"
)


@needs_records
def test_a_torn_tail_a_crash_of_our_own_left_is_cut(tmp_path: Path) -> None:
    """kill -9 of a sink in the middle of its write(): the next append cuts what it left."""
    path = tmp_path / "s.jsonl"
    first = b'{"recorded_at":"x","event":{"record_id":"a"}}\n'
    batch = b"".join(
        b'{"recorded_at":"x","event":{"record_id":"%d","pad":"%s"}}\n' % (n, b"p" * 9999)
        for n in range(3_000)
    )  # ~30 MB in one write: long enough to be killed in the middle of it
    batch_file = tmp_path / "batch"
    batch_file.write_bytes(batch)
    writer = (
        "import sys; from pathlib import Path; from exporters.jsonl import append_durably; "
        "append_durably(Path(sys.argv[1]), Path(sys.argv[2]).read_bytes())"
    )
    for _attempt in range(5):
        path.write_bytes(b"")
        append_durably(path, first)
        sink = subprocess.Popen([sys.executable, "-c", writer, str(path), str(batch_file)])
        wait_for_growth(path, len(first), sink)
        sink.send_signal(signal.SIGKILL)
        sink.wait()
        raw = path.read_bytes()
        if len(first) < len(raw) < len(first) + len(batch) and not raw.endswith(b"\n"):
            break
    else:
        pytest.skip("the kill never landed in the middle of the write")
    start, end = map(int, os.getxattr(path, APPEND_RECORD).split())
    assert (start, end) == (len(first), len(first) + len(batch))  # recorded before the write
    whole = raw.rfind(b"\n") + 1
    append_durably(path, b'{"recorded_at":"y","event":{"record_id":"b"}}\n')
    after = path.read_bytes()
    assert after == raw[:whole] + b'{"recorded_at":"y","event":{"record_id":"b"}}\n'
    assert all(orjson.loads(line) for line in after.splitlines())


def wait_for_growth(path: Path, size: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while path.stat().st_size <= size:
        assert process.poll() is None and time.monotonic() < deadline, "the writer never wrote"
        time.sleep(0.0005)


@needs_records
def test_a_dead_co_writers_torn_line_is_kept_and_ended(tmp_path: Path) -> None:
    """Not ours: its bytes stay, a newline ends them, and our line starts on its own."""
    path = tmp_path / "s.jsonl"
    a = b'{"recorded_at":"x","event":{"record_id":"a"}}\n'
    append_durably(path, a)
    theirs = upstream_line("elias01", "sess_00000000000000aa", 256 * KIB, random.Random(2))
    dying_co_writer(path, theirs[:100_000])
    b = b'{"recorded_at":"y","event":{"record_id":"b"}}\n'
    append_durably(path, b)
    assert path.read_bytes() == a + theirs[:100_000] + b"\n" + b
    assert record_ids_in(path) == {"a", "b"}  # the fragment does not parse: skipped
    c = b'{"recorded_at":"z","event":{"record_id":"c"}}\n'
    dying_co_writer(path, c[:10])  # a fragment shorter than a line's first field
    append_durably(path, b"")
    assert path.read_bytes().endswith(b + c[:10] + b"\n")


def dying_co_writer(path: Path, fragment: bytes) -> None:
    """A co-writer that died (or failed) after writing part of its line, under the lock."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, fragment)
    os.close(fd)


def test_a_failed_write_is_undone_before_the_lock_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "s.jsonl"
    a = b'{"recorded_at":"x","event":{"record_id":"a"}}\n'
    append_durably(path, a)
    real_write: Callable[[int, Any], int] = os.write

    def half_then_full_disk(fd: int, data: Any) -> int:
        if len(data) > 1000:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", half_then_full_disk)
    with pytest.raises(OSError, match="No space"):
        append_durably(path, b'{"recorded_at":"y","event":{"pad":"%s"}}\n' % (b"p" * 5000))
    assert path.read_bytes() == a  # nothing torn left for a co-writer to append after


@needs_records
def test_recovery_skips_only_the_sinks_own_lines(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path)
    sid = "sess_00000000000000aa"
    fields = {b"user_id": b"elias01", b"session_id": sid.encode()}
    start = {**event("elias01", T0), "kind": "session.start", "session_id": sid}
    message = event("elias01", T0)
    tagged = {**message, "session_id": sid, "session_seq": 1}
    sink.add([(b"1-0", {**fields, b"data": orjson.dumps(start)})], recovering=False)
    path = session_log_path(tmp_path, "elias01", sid)
    # Upstream recorded the untagged message (same record_id), then died mid-line.
    dying_co_writer(path, orjson.dumps({"recorded_at": "x", "event": message}) + b'\n{"rec')
    entry = (b"2-0", {**fields, b"data": orjson.dumps(tagged)})
    sink.add([entry], recovering=True)  # the sink died before its ack
    sink.add([entry], recovering=True)  # and again: now it is on disk
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4 and lines[2] == b'{"rec'
    assert [orjson.loads(lines[n])["event"] for n in (0, 1, 3)] == [start, message, tagged]
    assert len(events_in(path)) == 3
