"""The tagger on a real local Redis Cluster (three primaries, three replicas; tests/cluster.py):
the behaviour of one server, and a failover of the primary holding a partition mid-run."""

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from exporters.paths import session_log_path
from tagger.connect import sync_client
from tagger.control import request
from tagger.keys import Keys
from tagger.registry import list_sessions
from tagger.settings import Settings
from tests.cluster import LocalCluster
from tests.conftest import (
    SettingsFactory,
    run_burst,
    tagged,
    tagger_cmd,
    tagger_env,
    wait_for,
)
from tests.test_partitions import users_in
from tests.test_recovery import backlog_events, check_exactly_once


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    local.start()
    yield local
    local.stop()


@pytest.fixture
def on_cluster(cluster: LocalCluster, make_settings: SettingsFactory) -> SettingsFactory:
    def make(**overrides: Any) -> Settings:
        return make_settings(redis_url=cluster.url, **overrides)

    return make


@pytest.fixture
def cluster_client(cluster: LocalCluster) -> Iterator[Redis]:
    client = sync_client(cluster.url)
    yield client
    client.close()


def publish_replicated(cluster: LocalCluster, settings: Settings, events: list[Any]) -> None:
    """XADD each event to its partition on that partition's primary, then WAIT until a
    replica has them: a failover must not take back what the producer was told is stored."""
    by_stream: dict[str, list[Any]] = {}
    for e in events:
        by_stream.setdefault(Keys.of_user(settings, e["user_id"]).input_stream, []).append(e)
    for stream, mine in by_stream.items():
        port = cluster.servers[cluster.primary_for(stream)].port
        with Redis(port=port) as node:
            pipe = node.pipeline(transaction=False)
            for e in mine:
                pipe.xadd(stream, {"data": orjson.dumps(e)})
            pipe.execute()
            assert node.wait(1, 10_000) == 1, "the replica did not take the events"


def check_files(settings: Settings, client: Redis) -> None:
    """Every tagged message once in its session's JSONL file."""
    for e in tagged(client, settings):
        path = session_log_path(settings.data_dir, e["user_id"], e["session_id"])
        lines = [orjson.loads(line)["event"]["record_id"] for line in path.read_bytes().split()]
        assert lines.count(e["record_id"]) == 1, e["record_id"]


@pytest.mark.parametrize("partitions", [1, 3])
def test_a_backlog_is_tagged_exactly_once(
    cluster: LocalCluster, cluster_client: Redis, on_cluster: SettingsFactory, partitions: int
) -> None:
    settings = on_cluster(partitions=partitions)
    keys = Keys.every_partition(settings)
    assert all("{p" in k.input_stream for k in keys)  # hash-tagged even with one partition
    events = backlog_events(n_users=20, per_user=100, timeout_s=settings.session_timeout_s)
    publish_replicated(cluster, settings, events)
    run_burst(settings)
    check_exactly_once(cluster_client, settings, events)
    check_files(settings, cluster_client)
    if partitions > 1:  # the partitions' slots are spread over the primaries
        assert len({cluster.primary_for(k.input_stream) for k in keys}) > 1


def test_sessions_start_and_end_on_request(
    cluster_client: Redis, on_cluster: SettingsFactory
) -> None:
    settings = on_cluster(partitions=2)
    partitions = Keys.every_partition(settings)
    worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings))
    try:
        (user,) = users_in(settings, 1, 1)
        started = request(cluster_client, partitions, "start", user, performer_id="carer01")
        assert (started.status, started.reason) == ("ok", "started")
        ended = request(
            cluster_client,
            partitions,
            "end",
            user,
            performer_id="carer01",
            session_id=started.session_id,
        )
        assert (ended.status, ended.reason) == ("ok", "ended")
        (session,) = list_sessions(cluster_client, partitions, user_id=user)
        assert (session["session_id"], session["status"]) == (started.session_id, "closed")
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0


def test_failover_of_a_partitions_primary_mid_run_loses_and_doubles_nothing(
    cluster: LocalCluster, cluster_client: Redis, on_cluster: SettingsFactory, tmp_path: Path
) -> None:
    settings = on_cluster(partitions=2, claim_idle_ms=500)
    events = backlog_events(n_users=40, per_user=250, timeout_s=settings.session_timeout_s)
    publish_replicated(cluster, settings, events)
    victim = Keys.from_settings(settings, 0)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=log)
    try:
        # Kill the primary of partition 0 once part of that partition is tagged.
        wait_for(lambda: cluster_client.xlen(victim.output_stream) > 1000, timeout_s=60)
        primary = cluster.primary_for(victim.input_stream)
        at_kill = cluster_client.xlen(victim.output_stream)
        cluster.kill(primary)
        killed_at = time.monotonic()
        promoted = cluster.wait_for_failover(victim.input_stream)
        print(
            f"slot {key_slot(victim.input_stream.encode())}: node {primary} -> {promoted} "
            f"in {time.monotonic() - killed_at:.1f} s"
        )
        wait_for(lambda: len(tagged(cluster_client, settings)) >= len(events), timeout_s=120)
        assert worker.poll() is None, "the worker exited"
    finally:
        worker.terminate()
        code = worker.wait(timeout=60)
        log.close()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    assert at_kill < cluster_client.xlen(victim.output_stream)  # killed mid-partition
    check_exactly_once(cluster_client, settings, events)


def stored_record_ids(settings: Settings) -> tuple[list[str], list[str]]:
    """record_ids of the messages in the JSONL logs and in the Parquet files (duplicates
    kept: they are what is looked for)."""
    import pyarrow.parquet as pq

    jsonl = []
    for path in (settings.data_dir / "logs").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)["event"]
            if event.get("kind", "message") == "message":
                jsonl.append(event["record_id"])
    parquet: list[str] = []
    for path in (settings.data_dir / "parquet" / "events").rglob("part-*.parquet"):
        table = pq.read_table(path, columns=["kind", "record_id"])
        kinds, ids = table["kind"].to_pylist(), table["record_id"].to_pylist()
        parquet += [rid for kind, rid in zip(kinds, ids, strict=True) if kind == "message"]
    return jsonl, parquet


def output_ids(client: Redis, keys: Keys) -> dict[str, bytes]:
    """record_id -> output stream id of each tagged message."""
    return {
        orjson.loads(f[b"data"])["record_id"]: i
        for i, f in client.xrange(keys.output_stream)
        if f[b"kind"] == b"message"
    }


def quietly(condition: Any) -> Any:
    """`condition` for wait_for that counts a cluster mid-failover as "not yet"."""

    def check() -> Any:
        try:
            return condition()
        except (RedisError, RedisClusterException):
            return False

    return check


def test_files_keep_nothing_a_failover_took_back(
    tmp_path: Path, make_settings: SettingsFactory
) -> None:
    """The tagger tags a batch on a primary whose replica lags (SIGSTOP), the primary dies:
    the promoted replica has the input but not the tagging, so the batch is tagged again.
    The sinks must not have stored the first copy, or the files would hold it twice."""
    cluster = LocalCluster(tmp_path / "cluster")  # its own: this test kills a primary
    cluster.start()
    settings = make_settings(redis_url=cluster.url, claim_idle_ms=500, sink_lease_ms=3000)
    keys = Keys.from_settings(settings)
    events = backlog_events(n_users=10, per_user=40, timeout_s=settings.session_timeout_s)
    first, second = events[:200], events[200:]
    client = sync_client(cluster.url)
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=log)
    try:
        publish_replicated(cluster, settings, first)
        wait_for(lambda: all(len(ids) == len(first) for ids in stored_record_ids(settings)))

        primary = cluster.primary_for(keys.input_stream)
        replica = cluster.replica_of(primary)
        worker.send_signal(signal.SIGSTOP)  # the input reaches the replica, the tagging not
        publish_replicated(cluster, settings, second)
        cluster.pause(replica)
        # 32 MB more than the kernel's socket buffers hold: what comes after it (the
        # tagging) stays in the primary's memory and dies with it.
        client.set(keys.input_stream + ":filler", b"x" * (32 << 20))
        worker.send_signal(signal.SIGCONT)
        wait_for(lambda: len(tagged(client, settings)) == len(events))  # on the primary alone
        first_ids = output_ids(client, keys)
        time.sleep(2.0)  # ample time for a sink to store it, had it not waited for a replica
        stored_before = {e["record_id"] for e in first}
        assert all(set(ids) == stored_before for ids in stored_record_ids(settings))

        cluster.kill(primary)
        cluster.resume(replica)
        assert cluster.wait_for_failover(keys.input_stream) == replica
        everything = {e["record_id"] for e in events}
        wait_for(quietly(lambda: len(tagged(client, settings)) == len(events)), timeout_s=120)
        retagged = {r for r, i in output_ids(client, keys).items() if first_ids[r] != i}
        assert retagged == {e["record_id"] for e in second}  # the failover took them back
        wait_for(lambda: all(set(ids) == everything for ids in stored_record_ids(settings)))
        assert worker.poll() is None, "the worker exited"
    finally:
        worker.terminate()
        code = worker.wait(timeout=60)
        log.close()
        client.close()
        cluster.stop()
    assert code == 0, (tmp_path / "worker.log").read_text()[-3000:]
    jsonl, parquet = stored_record_ids(settings)
    assert sorted(jsonl) == sorted(parquet) == sorted(everything)  # each once
    assert "no replica confirmed" in (tmp_path / "worker.log").read_text()  # the sinks waited
