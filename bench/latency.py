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
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.open_loop import (
    TaggedReader,
    latencies_ms,
    mean_batch_size,
    offer,
    percentile,
    percentiles_ms,
    wait_drained,
)
from bench.servers import free_port, start_valkey, tagger, tagger_env
from bench.streams import OUTPUT
from tagger.connect import sync_client


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


def wait_ready(metrics_port: int) -> None:
    """Until the worker's /ready says 200: its partitions taken, its sinks started. Without
    this, a start slower than the warm-up second (the first balance, the sinks' process)
    was counted as latency: one run had p99 261 ms from a single 0.4 s wait at start."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=2):
                return
        except OSError:  # refused while it starts; HTTPError (a 503) is one too
            time.sleep(0.05)
    raise SystemExit("the worker was not ready within 60 s; see its worker.log")


def run_once(args: argparse.Namespace, contender: str) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tagger-latency-"))
    server, url = start_valkey(workdir, args.appendfsync)
    metrics_port = free_port()
    env = tagger_env(url, workdir, metrics_port)
    if contender == "plain":
        command = [sys.executable, "-m", "bench.latency", "--plain-loop", url]
    else:
        command = tagger("run", *(["--no-sinks"] if args.no_sinks else []))
    log = (workdir / "worker.log").open("wb")
    worker = subprocess.Popen(command, env=env, stderr=log)
    client = sync_client(url)
    reader = TaggedReader(url, multiprocessing.get_context())
    try:
        while not client.exists("a3cp:messages"):  # the consumer made its group
            time.sleep(0.05)
        if contender == "tagger":
            wait_ready(metrics_port)
        reader.start()
        offered = offer(client, args.rate, args.seconds, args.users)
        wait_drained(client)
        time.sleep(0.5)  # the reader's last XREAD
        mean_batch = mean_batch_size(metrics_port) if contender == "tagger" else None
        arrived = reader.arrived()
    finally:
        reader.close()
        worker.terminate()
        worker.wait(timeout=60)
        server.stop()
    latencies, in_server = latencies_ms(offered.sent, arrived)
    return {
        "contender": contender,
        "rate": args.rate,
        "achieved_rate": offered.achieved_rate,
        "seconds": args.seconds,
        "sinks_in_process": contender == "tagger" and not args.no_sinks,
        "appendfsync": args.appendfsync,
        "measured": len(offered.sent),
        "arrived": len(latencies),
        **percentiles_ms(latencies),
        "ids_p50_ms": percentile(in_server, 0.50),
        "ids_p99_ms": percentile(in_server, 0.99),
        "ids_max_ms": in_server[-1],
        "mean_batch_size": mean_batch,
    }


if __name__ == "__main__":
    main()
