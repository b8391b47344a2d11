"""Steps 2 and 3 of the overload run (overload, then drain and finish), sampled every
SAMPLE_S, and the summary of what the samples saw."""

import argparse
import json
import multiprocessing
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.overload.check import check_output
from bench.overload.probes import (
    get,
    input_backlog,
    metrics,
    own_rss_mb,
    ready,
    sink_groups,
    sink_lag,
    sinks_rss_mb,
)
from bench.overload.producer import produce, run_prefix
from bench.overload.worker import start_worker
from bench.servers import free_port, start_valkey
from bench.streams import DEAD, GROUP, INPUT, OUTPUT
from tagger.connect import sync_client

SAMPLE_S = 5.0


class Run:
    """The overload run's server, worker, producer and samples."""

    def __init__(self, args: argparse.Namespace, capacity: float) -> None:
        self.args = args
        self.capacity = capacity
        self.workdir = Path(tempfile.mkdtemp(prefix="tagger-overload-"))
        self.server, self.url = start_valkey(self.workdir, args.appendfsync)
        self.client = sync_client(self.url)
        self.port = free_port()
        self.prefix = run_prefix()
        self.worker = start_worker(self.workdir, self.url, self.port)
        self.rate = multiprocessing.Value("d", 0.0)
        self.published = multiprocessing.Value("q", 0)
        self.behind_max = multiprocessing.Value("q", 0)
        self.stop = multiprocessing.Event()
        self.producer = multiprocessing.Process(
            target=produce,
            args=(
                self.url, self.prefix, args.users, self.rate, self.published,
                self.behind_max, self.stop,
            ),
        )  # fmt: skip
        self.samples: list[dict[str, Any]] = []
        self.started = 0.0
        self._last_wait: tuple[float, float] = (0.0, 0.0)

    def backlog(self) -> int | None:
        b = input_backlog(self.client)
        return None if b is None else b[0] + b[1]

    def sample(self, phase: str) -> dict[str, Any]:
        b = input_backlog(self.client)
        m = metrics(self.port)
        wait_sum = m.get("tagger_batch_wait_seconds_sum", 0.0)
        wait_count = m.get("tagger_batch_wait_seconds_count", 0.0)
        last_sum, last_count = self._last_wait
        self._last_wait = (wait_sum, wait_count)
        line = {
            "t_s": round(time.perf_counter() - self.started, 1),
            "phase": phase,
            "offered_msg_s": round(self.rate.value),
            "published": self.published.value,
            "backlog": None if b is None else b[0] + b[1],
            "lag": None if b is None else b[0],
            "pending": None if b is None else b[1],
            "tagged": int(m.get("tagger_events_tagged_total", 0)),
            "output_length": int(self.client.xlen(OUTPUT)),
            "worker_rss_mb": own_rss_mb(self.worker.pid),
            "sinks_rss_mb": sinks_rss_mb(self.worker.pid),
            "ready": ready(self.port),
            "metrics": {
                "ms": m["ms"],
                "status": m["status"],
                "input_undelivered": m.get("input_undelivered"),
                "input_pending": m.get("input_pending"),
                "sink_lag": sink_lag(m),
                "sink_lag_by_sink": {
                    k.removeprefix("sink_lag_"): v
                    for k, v in m.items()
                    if k.startswith("sink_lag_")
                },
                "batch_wait_mean_s": (
                    round((wait_sum - last_sum) / (wait_count - last_count), 2)
                    if wait_count > last_count
                    else None
                ),
            },
        }
        ready_line = dict(line["ready"])  # every check's detail: in the summary, not here
        ready_line.pop("checks")
        print(json.dumps({**line, "ready": ready_line}), flush=True)
        self.samples.append(line)
        return line

    def close(self) -> None:
        self.stop.set()
        if self.producer.is_alive():
            self.producer.join(timeout=30)
        if self.worker.poll() is None:
            self.worker.terminate()
            self.worker.wait(timeout=120)
        self.server.stop()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)  # the AOF runs to gigabytes


def overload(args: argparse.Namespace, capacity: float) -> dict[str, Any]:
    run = Run(args, capacity)
    try:
        return overload_steps(run)
    finally:
        run.close()


def overload_steps(run: Run) -> dict[str, Any]:
    args, capacity = run.args, run.capacity
    while run.backlog() is None:  # the worker made its group
        if run.worker.poll() is not None:
            raise SystemExit(f"tagger run exited; see {run.workdir}/worker.log")
        time.sleep(0.05)
    while get(f"http://127.0.0.1:{run.port}/ready", timeout=2)[0] not in (200, 503):
        time.sleep(0.1)  # its endpoint is up
    run.rate.value = args.factor * capacity
    run.producer.start()
    run.started = time.perf_counter()
    first = run.sample("overload")
    overload_s = args.minutes * 60
    k = 1
    while (due := run.started + k * SAMPLE_S) <= run.started + overload_s:
        time.sleep(max(due - time.perf_counter(), 0))
        run.sample("overload")
        k += 1
    time.sleep(max(run.started + overload_s - time.perf_counter(), 0))
    at_end = run.sample("overload")
    slowed = time.perf_counter()
    end_tagged, end_published = at_end["tagged"], at_end["published"]
    slow_rate = args.slow_factor * capacity
    run.rate.value = slow_rate
    # Drained: at most one second of the slow producer's input (1,000 entries at least).
    drained_at = max(1000, int(slow_rate))
    drain_s = None
    ready_again_s = 0.0 if at_end["ready"]["status"] == 200 else None
    # Each sink on its own: the Parquet sink acks only when it rolls a part file (50,000
    # rows or 60 s), so its lag is a saw; it has caught up at its first low after the slow
    # down, whatever the JSONL sink's lag is then.
    sinks_drain_s: dict[str, float | None] = dict.fromkeys(sink_groups(run.client))
    next_sample = slowed + SAMPLE_S
    deadline = slowed + args.drain_timeout_s
    while time.perf_counter() < deadline:
        now = time.perf_counter()
        if drain_s is None and (b := run.backlog()) is not None and b <= drained_at:
            drain_s = round(now - slowed, 1)
        for sink, lag in sink_groups(run.client).items():
            if sinks_drain_s.get(sink) is None and lag <= drained_at:
                sinks_drain_s[sink] = round(now - slowed, 1)
        if now >= next_sample:
            line = run.sample("drain")
            next_sample += SAMPLE_S
            if ready_again_s is None and line["ready"]["status"] == 200:
                ready_again_s = round(now - slowed, 1)
        sinks_done = all(v is not None for v in sinks_drain_s.values())
        if drain_s is not None and ready_again_s is not None and sinks_done:
            break
        time.sleep(0.25)
    run.stop.set()
    run.producer.join(timeout=60)
    published = run.published.value
    stopped = time.perf_counter()
    input_done_s = None
    last = run.sample("stopped")
    while True:  # all tagged, then all stored (the output check needs the first only)
        if input_done_s is None and last["backlog"] == 0:
            input_done_s = round(time.perf_counter() - stopped, 1)
        if done := input_done_s is not None and last["metrics"]["sink_lag"] == 0:
            break
        if time.perf_counter() > stopped + args.finish_timeout_s:
            while input_done_s is None and run.backlog() != 0:
                time.sleep(0.5)  # the input at least, else the check would count it lost
            break
        time.sleep(SAMPLE_S)
        last = run.sample("stopped")
    finish_s = round(time.perf_counter() - stopped, 1) if done else None
    run.worker.terminate()
    code = run.worker.wait(timeout=120)
    lost, doubled, foreign = check_output(run.client, run.prefix, published)
    overload_samples = [s for s in run.samples if s["phase"] == "overload"]
    span = at_end["t_s"] - first["t_s"]

    def rss(key: str) -> dict[str, float | None]:
        values = [s[key] for s in run.samples if s[key] is not None]
        if not values:
            return {"first": None, "last": None, "max": None}
        return {"first": values[0], "last": values[-1], "max": max(values)}

    ready_seen: dict[str, int] = {}
    for s in run.samples:
        key = f"{s['phase']} {s['ready']['status']}"
        ready_seen[key] = ready_seen.get(key, 0) + 1
    failed = sorted({f.split(":")[0] for s in run.samples for f in s["ready"]["failed"]})
    checks = sorted({c for s in run.samples for c in s["ready"]["checks"]})
    # What /ready says of the tagger's own input, and the biggest backlog it passed with.
    input_checks = sorted({c for c in checks if c.startswith(f"group {GROUP} on {INPUT}:")})
    passed = [s["backlog"] or 0 for s in run.samples if s["ready"]["status"] == 200]
    return {
        "minutes": args.minutes,
        "factor": args.factor,
        "offered_msg_s": round(args.factor * capacity),
        "achieved_offer_msg_s": round((end_published - first["published"]) / span),
        "producer_behind_max": run.behind_max.value,
        "tagging_msg_s_under_overload": round((end_tagged - first["tagged"]) / span),
        "stored_msg_s_under_overload": {
            sink: round((at_end["output_length"] - lag - first["output_length"] + first_lag) / span)
            for sink, lag in at_end["metrics"]["sink_lag_by_sink"].items()
            if (first_lag := first["metrics"]["sink_lag_by_sink"].get(sink)) is not None
        },
        "sink_lag_at_end_of_overload": at_end["metrics"]["sink_lag_by_sink"],
        "sink_lag_max": max(s["metrics"]["sink_lag"] or 0 for s in run.samples),
        "backlog_at_end_of_overload": at_end["backlog"],
        "backlog_growth_msg_s": round(((at_end["backlog"] or 0) - (first["backlog"] or 0)) / span),
        "backlog_max": max(s["backlog"] or 0 for s in run.samples),
        "batch_wait_mean_s_max": max(
            (w for s in overload_samples if (w := s["metrics"]["batch_wait_mean_s"]) is not None),
            default=None,
        ),
        "metrics_ms_max": max(s["metrics"]["ms"] for s in run.samples),
        "ready_ms_max": max(s["ready"]["ms"] for s in run.samples),
        "worker_rss_mb": rss("worker_rss_mb"),
        "sinks_rss_mb": rss("sinks_rss_mb"),
        "ready_seen": ready_seen,
        "ready_failed_checks": failed,
        "ready_input_checks": input_checks,
        "ready_200_with_backlog_max": max(passed, default=None),
        "slow_msg_s": round(slow_rate),
        "drained_at_backlog": drained_at,
        "drain_s": drain_s,
        "sinks_drain_s": sinks_drain_s,
        "ready_200_again_s": ready_again_s,
        "stopped_to_input_done_s": input_done_s,
        "stopped_to_all_stored_s": finish_s,
        "sink_lag_at_stop": last["metrics"]["sink_lag_by_sink"],
        "published": published,
        "tagged_at_stop": last["tagged"],
        "lost": lost,
        "doubled": doubled,
        "foreign": foreign,
        "dead_letters": int(run.client.xlen(DEAD)),
        "worker_exit": code,
        "workdir": str(run.workdir) if args.keep else None,
    }
