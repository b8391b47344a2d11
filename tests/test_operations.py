"""Operating a running `tagger run`: /metrics, /health, /ready, JSON logs, `tagger health`."""

import asyncio
import logging
import os
import pty
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from exporters.runner import create_group
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
    wait_for,
)

MARKER = "private-words-of-a-user"  # event content that must never reach a log line


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    status, body = get(port, "/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


@contextmanager
def worker(settings: Settings, *args: str) -> Iterator[tuple[int, Path]]:
    """`tagger -v run` on a free port, JSON logs to a file, answering /health; then SIGTERM,
    and it must exit 0."""
    port = free_port()
    env = {**tagger_env(settings), "TAGGER_METRICS_PORT": str(port), "TAGGER_LOG_FORMAT": "json"}
    log_path = settings.data_dir.parent / f"worker-{port}.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(tagger_cmd("-v", "run", *args), env=env, stderr=log_file)
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None)
        assert proc.poll() is None, "the worker exited at start"
        yield port, log_path
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0


def _answers(port: int) -> bool:
    try:
        return get(port, "/health")[0] == 200
    except OSError:
        return False


def test_metrics_health_and_json_logs_of_a_running_worker(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=1, sweep_interval_ms=100)
    now = int(time.time() * 1000)
    users = ["ana01", "ben02", "cleo03"]
    good = [event(u, now + i, context={"note": MARKER}) for i in range(40) for u in users]
    bad = [b"{not json " + MARKER.encode(), orjson.dumps({"user_id": MARKER})]
    with worker(settings) as (port, log_path):
        publish(client, settings, [*good, good[0], *bad])  # good[0] again: a duplicate
        wait_for(lambda: len(tagged(client, settings)) == len(good))
        # The sweeper closes all three sessions a second (wall clock) after their last event.
        closed = ("tagger_sessions_closed_total", (("reason", "timeout"),))
        # (Gauges are read before the counters are rendered: wait for both to agree.)
        active = ("tagger_active_sessions", ())
        metrics = wait_for(
            lambda: (m := samples(port)).get(closed) == len(users) and m.get(active) == 0 and m
        )
        assert metrics[("tagger_events_tagged_total", ())] == len(good)
        assert metrics[("tagger_duplicates_dropped_total", ())] == 1
        assert metrics[("tagger_sessions_opened_total", ())] == len(users)
        dead = {k[1][0][1]: v for k, v in metrics.items() if k[0] == "tagger_dead_letters_total"}
        assert sum(dead.values()) == len(bad), dead
        assert metrics[("tagger_active_sessions", ())] == 0
        assert metrics[("tagger_batch_size_count", ())] >= 1
        assert metrics[("tagger_batch_size_sum", ())] == len(good) + 1 + len(bad)
        assert metrics[("tagger_tag_seconds_sum", ())] > 0
        lag = {k[1]: v for k, v in metrics.items() if k[0] == "tagger_consumer_lag"}
        input_lag = [
            v for labels, v in lag.items() if ("stream", streams(settings).input_stream) in labels
        ]
        assert input_lag == [0, 0]
        wait_for(lambda: all(v == 0 for k, v in samples(port).items() if k[0] == "tagger_sink_lag"))
        assert {k[1] for k in samples(port) if k[0] == "tagger_sink_lag"} == {
            (("sink", "jsonl"),),
            (("sink", "parquet"),),
        }
        received = [v for k, v in metrics.items() if k[0] == "faststream_received_messages_total"]
        # FastStream's middleware counts the batches FastStream read (at least the first;
        # the handler reads the ones after it itself), the tagger_* metrics every entry.
        assert sum(received) >= 1

        status, body = get(port, "/ready")
        assert status == 200, body
        ready = orjson.loads(body)
        assert ready["ready"] is True
        names = {c["name"] for c in ready["checks"]}
        assert {"server", "sink jsonl", "sink parquet"} <= names
        assert get(port, "/health") == (200, b'{"status":"ok"}')
        status, body = get(port, "/nowhere")
        assert status == 404 and b"/metrics" in body
    logs = log_path.read_text()
    lines = [orjson.loads(line) for line in logs.splitlines()]  # every line is JSON
    assert MARKER not in logs
    batches = [line for line in lines if "tag_ms" in line]
    assert sum(b["tagged"] for b in batches) == len(good)
    assert all({"time", "level", "logger", "message", "batch"} <= set(b) for b in batches)
    assert any(line["logger"].startswith("tagger.broker") for line in lines)  # FastStream's too


def test_ready_and_health_fail_while_a_sink_falls_behind(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(ready_max_sink_lag=5)
    publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(20)])
    run_burst(settings, sinks=False)  # tagged; no sink group yet
    env = tagger_env(settings)
    checked = subprocess.run(tagger_cmd("health"), env=env, capture_output=True, text=True)
    assert checked.returncode == 1
    assert "group session-tagger-jsonl" in checked.stderr and "tagger run" in checked.stderr
    no_sinks = subprocess.run(
        tagger_cmd("health", "--no-sinks"), env=env, capture_output=True, text=True
    )
    assert no_sinks.returncode == 0, no_sinks.stderr

    async def sink_groups_from_the_start() -> None:
        from tagger.connect import async_client

        assert settings.redis_url
        aclient: Any = async_client(settings.redis_url)
        for sink in ("jsonl", "parquet"):
            await create_group(aclient, streams(settings).output_stream, f"{settings.group}-{sink}")
        await aclient.aclose()

    asyncio.run(sink_groups_from_the_start())  # 21 entries behind: a start and 20 events
    checked = subprocess.run(tagger_cmd("health"), env=env, capture_output=True, text=True)
    assert checked.returncode == 1
    assert "sink jsonl" in checked.stderr and "--sinks-only" in checked.stderr
    with worker(settings, "--sinks-only") as (port, _log):
        # The sinks catch up, then /ready agrees with `tagger health`.
        wait_for(lambda: get(port, "/ready")[0] == 200)
    checked = subprocess.run(tagger_cmd("health"), env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_ready_and_health_fail_while_input_waits_to_be_tagged(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(ready_max_input_lag=5)
    env = tagger_env(settings)

    def health(flag: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(tagger_cmd("health", flag), env=env, capture_output=True, text=True)

    run_burst(settings, sinks=False)  # creates the groups; nothing to tag yet
    fine = health("--no-sinks")
    assert fine.returncode == 0, fine.stderr
    publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(20)])
    behind = health("--no-sinks")
    assert behind.returncode == 1
    assert "20 input entries not yet tagged (limit 5)" in behind.stderr, behind.stderr
    assert "add workers" in behind.stderr  # what to do about it
    run_burst(settings, sinks=False)  # tagged: the backlog is gone
    caught_up = health("--no-sinks")
    assert caught_up.returncode == 0, caught_up.stderr
    # A sinks-only worker does not tag: the input backlog is not its readiness.
    publish(client, settings, [event(ts_ms=1_750_000_100_000 + i) for i in range(20)])
    sinks_only = health("--sinks-only")
    assert "input entries" not in sinks_only.stdout + sinks_only.stderr


def test_status_shows_a_live_view_and_quits_on_q(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    with worker(settings):
        publish(client, settings, [event("ana01"), event("ben02"), b"not json"])
        wait_for(lambda: len(tagged(client, settings)) == 2)
        once = subprocess.run(
            tagger_cmd("status", "--once", "--interval", "0.1"),
            env=tagger_env(settings),
            capture_output=True,
            text=True,
        )
        assert once.returncode == 0, once.stderr
        assert re.search(r"active sessions\s+2", once.stdout)
        assert "invalid_json" in once.stdout  # the last dead letter, with its reason
        assert re.search(
            rf"session-tagger on {re.escape(streams(settings).input_stream)}\s+│\s+0\s+│\s+0",
            once.stdout,
        )

        # At a terminal it redraws until q is pressed; Ctrl-C quits cleanly too.
        at_a_terminal(settings, lambda proc, main_fd: os.write(main_fd, b"q"))
        at_a_terminal(settings, lambda proc, _fd: proc.send_signal(signal.SIGINT))


def at_a_terminal(
    settings: Settings, press: Callable[[subprocess.Popen[bytes], int], Any]
) -> bytes:
    """Run `tagger status` on a new pseudo-terminal until two frames are drawn, then
    `press`; it must exit 0. Returns what it drew."""
    main_fd, terminal_fd = pty.openpty()
    live = subprocess.Popen(
        tagger_cmd("status", "--interval", "0.2"),
        env={**tagger_env(settings), "COLUMNS": "120"},
        stdin=terminal_fd,
        stdout=terminal_fd,
        stderr=terminal_fd,
    )
    os.close(terminal_fd)
    screen = b""
    try:
        while screen.count(b"active sessions") < 2:
            assert live.poll() is None, screen.decode(errors="replace")
            screen += os.read(main_fd, 65536)
        press(live, main_fd)
        assert live.wait(timeout=15) == 0
    finally:
        live.kill()
        os.close(main_fd)


def test_info_summary_sums_up_the_batches(
    client: Redis, make_settings: SettingsFactory, monkeypatch: Any, caplog: Any
) -> None:
    monkeypatch.setattr("tagger.report.REPORT_INTERVAL_S", 0.0)  # a summary after each batch
    settings = make_settings(batch_size=7)
    publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(30)])
    with caplog.at_level(logging.INFO, logger="tagger"):
        run_burst(settings, sinks=False)
    summaries = [r for r in caplog.records if "events tagged in" in r.getMessage()]
    assert sum(vars(r)["tagged"] for r in summaries) == 30
    assert all(vars(r)["batches"] >= 1 and vars(r)["mean_tag_ms"] > 0 for r in summaries)


def test_sigusr1_logs_where_every_task_waits(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    port = free_port()
    env = {**tagger_env(settings), "TAGGER_METRICS_PORT": str(port), "TAGGER_LOG_FORMAT": "json"}
    log_path = settings.data_dir.parent / "worker-usr1.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(tagger_cmd("run", "--no-sinks"), env=env, stderr=log_file)
    try:
        wait_for(lambda: _answers(port))
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "Stack for <Task" in log_path.read_text())  # each task's frames
        assert proc.poll() is None  # and it goes on
        assert _answers(port)
    finally:
        proc.terminate()
        assert proc.wait(timeout=60) == 0, log_path.read_text()
