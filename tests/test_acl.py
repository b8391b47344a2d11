"""Every part of the service works as a least-privilege ACL user, and nothing more does."""

import signal
import subprocess
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from redis import Redis, RedisCluster
from redis.exceptions import NoPermissionError

from tagger.acl import acl_rules
from tagger.connect import sync_client
from tagger.runtime.transaction import TRANSACTION_FROM_EVENTS
from tests.conftest import (
    SettingsFactory,
    event,
    free_port,
    streams,
    tagger_cmd,
    tagger_env,
    wait_for,
)
from tests.test_operations import get

T0 = 1_750_000_000_000


def on_every_node(client: Redis, *command: str) -> None:
    """ACL rules live on each server: a cluster needs them on every node (replicas too,
    they take over on a failover)."""
    if isinstance(client, RedisCluster):
        client.execute_command(*command, target_nodes=RedisCluster.ALL_NODES)
    else:
        client.execute_command(*command)


def test_the_whole_service_runs_as_a_least_privilege_user(
    server_url: str, client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    user, password = f"tagger-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    where = urlsplit(server_url)
    url = f"{where.scheme}://{user}:{password}@{where.hostname}:{where.port}"
    settings = make_settings(redis_url=url, trim_interval_s=0.2, session_timeout_s=1)
    printed = subprocess.run(
        tagger_cmd("acl", "--user", user), env=tagger_env(settings), capture_output=True, text=True
    ).stdout.split()
    assert printed[:5] == ["ACL", "SETUSER", user, "on", "><password>"]
    assert printed[5:] == acl_rules(settings)  # what `tagger acl` prints is what is tested
    on_every_node(client, "ACL", "SETUSER", user, "on", f">{password}", *printed[5:])
    try:
        env = tagger_env(settings)
        port = free_port()
        worker_env = {**env, "TAGGER_METRICS_PORT": str(port)}

        def tagger(*args: str) -> str:
            done = subprocess.run(tagger_cmd(*args), env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            assert "NOPERM" not in done.stdout + done.stderr
            return done.stdout

        source = tmp_path / "events.jsonl"
        # Published before the worker starts, so that its first batch is large enough to
        # commit as a transaction (WATCH, MULTI, EXEC) besides the script of later ones.
        events = [event("ana01", T0 + i * 1000) for i in range(TRANSACTION_FROM_EVENTS)]
        source.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events) + b"{bad\n")
        tagger("publish", str(source))
        log = tmp_path / "worker.log"
        with log.open("wb") as log_file:
            worker = subprocess.Popen(tagger_cmd("run"), env=worker_env, stderr=log_file)
        try:
            wait_for(lambda: client.xlen(streams(settings).output_stream) > len(events))
            started = tagger("sessions", "start", "--user", "ben02", "--performer", "carer01")
            assert "started" in started
            wait_for(lambda: get(port, "/ready")[0] == 200)
            assert get(port, "/metrics")[0] == 200
            wait_for(lambda: client.xlen(streams(settings).input_stream) <= 1)  # trimmed
            time.sleep(1.5)  # the sweeper closes both sessions (1 s timeout)
        finally:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        # A refused command is logged as NOPERM or, raised by redis-py, "no permissions"
        # (a refused batch is then tagged entry by entry: only the log shows it).
        assert "NOPERM" not in log.read_text() and "no permissions" not in log.read_text()

        tagger("health")
        assert "active sessions" in tagger("status", "--once", "--interval", "0.1")
        listed = orjson.loads(tagger("sessions", "list", "--user", "ana01", "--json"))
        (session,) = listed
        tagger("export", session["session_id"], "--out", str(tmp_path / "s.zip"))
        tagger("compact")
        erased = orjson.loads(tagger("erase", "--user", "ana01", "--yes", "--json"))
        assert erased["sessions"] == 1

        limited = sync_client(url)
        for forbidden in (
            ("FLUSHALL",),
            ("KEYS", "*"),
            ("GET", "someone:else"),
            ("CONFIG", "GET", "*"),
        ):
            with pytest.raises(NoPermissionError):
                limited.execute_command(*forbidden)
        limited.close()
    finally:
        on_every_node(client, "ACL", "DELUSER", user)
