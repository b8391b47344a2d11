"""TAGGER_PARTITIONS > 1 on one server: names, routing, tagging, files and the registry."""

import re
import subprocess
from pathlib import Path

import orjson
import pyarrow.dataset as ds
from redis import Redis

from exporters.paths import session_log_path
from tagger.keys import Keys, partition_of
from tagger.registry import get_session, list_sessions, validate
from tagger.settings import Settings
from tests.conftest import (
    SettingsFactory,
    event,
    publish,
    run_burst,
    tagged,
    tagger_cmd,
    tagger_env,
    wait_for,
)
from tests.test_recovery import T0, backlog_events, check_exactly_once


def hash_tag(name: str) -> str:
    """The part of a key name Redis Cluster hashes: between the first { and the next }."""
    match = re.search(r"\{([^}]*)\}", name)
    assert match and match[1], f"{name} has no hash tag"
    return match[1]


def users_in(settings: Settings, partition: int, count: int) -> list[str]:
    """`count` user ids that belong to `partition`."""
    found = (f"user{n:04d}" for n in range(10_000))
    mine = (u for u in found if partition_of(u, settings.partitions) == partition)
    return [next(mine) for _ in range(count)]


def test_partition_of_is_plain_crc32_mod_n() -> None:
    # 0xCBF43926 is CRC-32's published check value for "123456789": a producer written in
    # another language whose CRC-32 gives it routes every user the same way.
    assert partition_of("123456789", 1 << 32) == 0xCBF43926
    assert partition_of("123456789", 7) == 0xCBF43926 % 7
    assert partition_of("anything", 1) == 0


def test_every_name_of_a_partition_shares_its_hash_tag(make_settings: SettingsFactory) -> None:
    settings = make_settings(partitions=3)
    for p, keys in enumerate(Keys.every_partition(settings)):
        names = [
            keys.input_stream,
            keys.output_stream,
            keys.dead_letter_stream,
            keys.control_stream,
            keys.control_replies,
            *keys.script_keys(),
            keys.session("sess_0123456789abcdef"),
            keys.user_sessions("elias01"),
            keys.sink_lease("jsonl"),
            keys.sink_pause("parquet"),
        ]
        assert {hash_tag(name) for name in names} == {f"p{p}"}
    one = make_settings()
    if not one.cluster:  # one partition on one server keeps the plain names
        assert "{" not in Keys.from_settings(one).input_stream + Keys.from_settings(one).active


def test_two_partitions_tag_exactly_like_one(client: Redis, make_settings: SettingsFactory) -> None:
    one = make_settings()
    two = make_settings(partitions=2, data_dir=one.data_dir.parent / "two")
    events = backlog_events(n_users=30, per_user=60, timeout_s=one.session_timeout_s)
    for settings in (one, two):
        publish(client, settings, events)
        run_burst(settings)
    check_exactly_once(client, two, events)
    # Session ids come from (user, opening record): the same with or without partitions.
    assert {e["record_id"]: e["session_id"] for e in tagged(client, two)} == {
        e["record_id"]: e["session_id"] for e in tagged(client, one)
    }
    for keys in Keys.every_partition(two):
        users = {f[b"user_id"].decode() for _, f in client.xrange(keys.output_stream)}
        assert users and all(partition_of(u, 2) == keys.partition for u in users)
    # Files: each event once in its session's JSONL file and once in the Parquet dataset,
    # whose part files name the partition their stream ids count in.
    for e in tagged(client, two):
        path = session_log_path(two.data_dir, e["user_id"], e["session_id"])
        lines = [orjson.loads(line)["event"]["record_id"] for line in path.read_bytes().split()]
        assert lines.count(e["record_id"]) == 1
    root = two.data_dir / "parquet" / "events"
    rows = ds.dataset(root, format="parquet", partitioning="hive").to_table().to_pylist()
    messages = [row["record_id"] for row in rows if row["kind"] == "message"]
    assert sorted(messages) == sorted(e["record_id"] for e in events)
    suffixes = {p.name.rsplit("-", 1)[1] for p in root.glob("*/part-*.parquet")}
    assert suffixes == {"p0.parquet", "p1.parquet"}


def test_a_misrouted_event_is_dead_lettered_and_nothing_else_is_lost(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(partitions=2)
    (stray,) = users_in(settings, 1, 1)
    p0, p1 = Keys.every_partition(settings)
    client.xadd(p0.input_stream, {"data": orjson.dumps(event(stray, T0))})
    good = [event(u, T0) for u in users_in(settings, 0, 2) + users_in(settings, 1, 2)]
    publish(client, settings, good)
    run_burst(settings)
    assert sorted(e["record_id"] for e in tagged(client, settings)) == sorted(
        e["record_id"] for e in good
    )
    ((_, dead),) = client.xrange(p0.dead_letter_stream)
    assert dead[b"reason"] == b"wrong_partition"
    assert b"belongs to partition 1 of 2" in dead[b"detail"]
    assert client.xlen(p1.dead_letter_stream) == 0


def test_registry_and_cli_see_every_partition(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(partitions=2)
    users = users_in(settings, 0, 2) + users_in(settings, 1, 2)
    publish(client, settings, [event(u, T0 + n * 60_000) for n, u in enumerate(users)])
    run_burst(settings)
    partitions = Keys.every_partition(settings)
    listed = list_sessions(client, partitions)
    assert [s["user_id"] for s in listed] == users[::-1]  # newest first, across partitions
    assert [s["user_id"] for s in list_sessions(client, partitions, limit=2, offset=1)] == [
        users[2],
        users[1],
    ]
    for session in listed:
        assert get_session(client, partitions, session["session_id"]) == session
        assert validate(client, partitions, session["user_id"], session["session_id"]) == "active"
        mine = list_sessions(client, partitions, user_id=session["user_id"])
        assert [s["session_id"] for s in mine] == [session["session_id"]]
    shown = subprocess.run(
        tagger_cmd("sessions", "list", "--json"),
        env=tagger_env(settings),
        capture_output=True,
        check=True,
    )
    assert [s["user_id"] for s in orjson.loads(shown.stdout)] == users[::-1]


def test_compact_keeps_one_file_per_partition(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(partitions=2)
    users = users_in(settings, 0, 2) + users_in(settings, 1, 2)
    for n in range(3):  # three runs: three part files per partition
        publish(client, settings, [event(u, T0 + n * 1000) for u in users])
        run_burst(settings)
    days = (settings.data_dir / "parquet" / "events").glob("date=*")
    day = max(days, key=lambda d: len(list(d.iterdir())))  # the events' day
    before = ds.dataset(day, format="parquet").to_table().sort_by("record_id")
    assert len(list(day.glob("part-*.parquet"))) == 6
    subprocess.run(tagger_cmd("compact"), env=tagger_env(settings), check=True)
    assert sorted(p.name.rsplit("-", 1)[1] for p in day.glob("part-*.parquet")) == [
        "p0.parquet",
        "p1.parquet",
    ]
    assert ds.dataset(day, format="parquet").to_table().sort_by("record_id").equals(before)
    # The merged names still mark each partition's progress: a later run adds only the new.
    publish(client, settings, [event(u, T0 + 5000) for u in users])
    run_burst(settings)
    records = ds.dataset(day, format="parquet").to_table().column("record_id").to_pylist()
    assert len(records) == len(set(records)) == before.num_rows + len(users)


def test_workers_divide_the_partitions_and_take_over_from_a_dead_one(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=2, sink_lease_ms=600, claim_idle_ms=500)
    env = tagger_env(settings)
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    workers = []
    for n, log in enumerate(logs):
        worker_env = {**env, "TAGGER_CONSUMER": f"worker{n}", "TAGGER_LOG_FORMAT": "json"}
        with log.open("wb") as out:
            workers.append(subprocess.Popen(tagger_cmd("run"), env=worker_env, stderr=out))
    try:

        def shares(log: Path) -> list[list[int]]:
            lines = [orjson.loads(line) for line in log.read_bytes().splitlines() if line]
            return [line["partitions"] for line in lines if "partitions" in line]

        # Each ends up serving one partition of its own (the split follows the names).
        wait_for(lambda: [shares(log)[-1:] for log in logs] == [[[0]], [[1]]])
        events = backlog_events(n_users=20, per_user=50, timeout_s=settings.session_timeout_s)
        publish(client, settings, events[:500])
        wait_for(lambda: len(tagged(client, settings)) == 500)
        workers[0].kill()  # its heartbeat lapses; worker1 takes partition 0 over
        workers[0].wait()
        wait_for(lambda: shares(logs[1])[-1] == [0, 1])
        publish(client, settings, events[500:])
        wait_for(lambda: len(tagged(client, settings)) == len(events))
    finally:
        for worker in workers:
            worker.terminate()
        assert workers[1].wait(timeout=60) == 0, logs[1].read_text()[-3000:]
    check_exactly_once(client, settings, events)
