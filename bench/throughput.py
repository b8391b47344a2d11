"""Tagger vs a plain copy loop on the same backlog, several rounds; one JSON line each.

    python -m bench.throughput [--events 100000] [--users 500] [--rounds 3]

Uses TAGGER_REDIS_URL or an embedded Valkey (appendfsync everysec for both contenders).
The plain loop reads with XREADGROUP COUNT 500, re-adds each entry unchanged with a
pipeline and acks: no parsing, validation or tagging. Ratios are within one run.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from redis import Redis

from tagger.connect import sync_client
from tagger.demo import user_timeline
from tagger.server import EmbeddedValkey
from tagger.settings import Settings
from tagger.worker import Worker


def backlog(n_events: int, n_users: int) -> list[bytes]:
    rng = random.Random(1)
    per_user = -(-n_events // n_users)
    start = 1_750_000_000_000
    timelines = [user_timeline(rng, f"u{n:04d}", start, per_user, 300) for n in range(n_users)]
    events = sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])
    return [orjson.dumps(e) for e in events[:n_events]]


def load(client: Redis, stream: str, payloads: list[bytes]) -> None:
    for i in range(0, len(payloads), 1000):
        pipe = client.pipeline(transaction=False)
        for p in payloads[i : i + 1000]:
            pipe.xadd(stream, {"data": p})
        pipe.execute()
    client.xgroup_create(stream, "bench", id="0")


def plain_copy_loop(client: Redis, stream: str) -> float:
    started = time.perf_counter()
    while True:
        reply = client.xreadgroup("bench", "c", {stream: ">"}, count=500)
        if not reply:
            return time.perf_counter() - started
        entries = reply[0][1]
        pipe = client.pipeline(transaction=False)
        for _id, fields in entries:
            pipe.xadd(f"{stream}:copy", fields)
        pipe.xack(stream, "bench", *[i for i, _ in entries])
        pipe.execute()


def bench_settings(url: str, stream: str) -> Settings:
    """The tagger's settings for a backlog in `stream` (every other name derived from it)."""
    return Settings(
        redis_url=url,
        input_stream=stream,
        output_stream=f"{stream}:tagged",
        dead_letter_stream=f"{stream}:dead",
        group="bench",
        state_prefix=f"{stream}:state",
        control_stream=f"{stream}:control",
    )


def tagger_burst(url: str, stream: str) -> float:
    settings = bench_settings(url, stream)
    started = time.perf_counter()
    # Tagging only: the file sinks are not part of what the plain loop is compared with.
    asyncio.run(Worker(settings, url, burst=True, sinks=False).run())
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = None
    url = os.environ.get("TAGGER_REDIS_URL")
    if not url:
        server = EmbeddedValkey(Path(tempfile.mkdtemp()), appendfsync="everysec")
        url = server.start()
    client = sync_client(url)
    payloads = backlog(args.events, args.users)
    ratios = []
    try:
        for round_no in range(args.rounds):
            rates = {}
            for name, run in (("plain", plain_copy_loop), ("tagger", None)):
                stream = f"bench:{uuid.uuid4().hex[:8]}"
                load(client, stream, payloads)
                seconds = run(client, stream) if run else tagger_burst(url, stream)
                rates[name] = args.events / seconds
                for key in client.scan_iter(f"{stream}*"):
                    client.delete(key)
            ratios.append(rates["tagger"] / rates["plain"])
            print(
                json.dumps(
                    {
                        "round": round_no,
                        "events": args.events,
                        "plain_msg_s": round(rates["plain"]),
                        "tagger_msg_s": round(rates["tagger"]),
                        "ratio": round(ratios[-1], 3),
                    }
                )
            )
        print(json.dumps({"median_ratio": round(statistics.median(ratios), 3)}))
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
