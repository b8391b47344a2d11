"""One worker against two on the same partitioned backlog, several rounds.

    python -m bench.scale [--events 100000] [--users 500] [--partitions 2] [--rounds 2]

Each round publishes the backlog (routed by user) to fresh streams of one embedded Valkey,
then times `tagger run --burst --no-sinks` with one worker, and again with two started
together (process start included in both). Prints a JSON line per run and the median
ratio two/one. Two workers and the server share this machine's cores."""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson

from bench.throughput import backlog
from tagger.connect import sync_client
from tagger.publish import publish_raw, router
from tagger.server import EmbeddedValkey
from tagger.settings import Settings


def timed_run(
    url: str, data_dir: Path, partitions: int, workers: int, payloads: list[bytes]
) -> float:
    ns = f"bench:{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    env |= {
        "TAGGER_REDIS_URL": url,
        "TAGGER_PARTITIONS": str(partitions),
        "TAGGER_INPUT_STREAM": f"{ns}:in",
        "TAGGER_OUTPUT_STREAM": f"{ns}:out",
        "TAGGER_DEAD_LETTER_STREAM": f"{ns}:dead",
        "TAGGER_CONTROL_STREAM": f"{ns}:control",
        "TAGGER_STATE_PREFIX": f"{ns}:state",
        "TAGGER_METRICS_PORT": "0",
        "TAGGER_DATA_DIR": str(data_dir / ns),
    }
    settings = Settings(**{k[7:].lower(): v for k, v in env.items() if k.startswith("TAGGER_")})
    with sync_client(url) as client:
        for _sent in publish_raw(client, router(settings), payloads):
            pass
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tagger", "run", "--burst", "--no-sinks"],
            env={**env, "TAGGER_CONSUMER": f"worker{n}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for n in range(workers)
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit("a worker failed; rerun with the same settings by hand to see why")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    payloads = backlog(args.events, args.users)
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedValkey(Path(tmp), appendfsync="everysec")
        url = server.start()
        ratios = []
        try:
            for n in range(args.rounds):
                rates = {}
                for workers in (1, 2):
                    seconds = timed_run(url, Path(tmp), args.partitions, workers, payloads)
                    rates[workers] = len(payloads) / seconds
                    line = {"round": n, "workers": workers, "events": len(payloads)}
                    print(orjson.dumps(line | {"msg_s": round(rates[workers])}).decode())
                ratios.append(rates[2] / rates[1])
        finally:
            server.stop()
    print(orjson.dumps({"median_ratio_two_to_one": round(statistics.median(ratios), 3)}).decode())


if __name__ == "__main__":
    main()
