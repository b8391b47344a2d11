"""Tagger vs a plain copy loop on the same backlog, several rounds; one JSON line each.

    python -m bench.throughput [--events 100000] [--users 500] [--rounds 3]

Uses TAGGER_REDIS_URL or an embedded Valkey (appendfsync everysec for every contender).
The plain loop reads with XREADGROUP COUNT 500, re-adds each entry unchanged with a
pipeline and acks: no parsing, validation or tagging. The floor loop writes what any
tagger with this output must write, and nothing more (see FLOOR_LUA). Ratios are within
one run. Where the server runs on this machine, each contender's server CPU per event
(its main thread, which runs every command) is given too: the floor's bounds every tagger.
`tagger_worker_us_per_event`: the tagger's own CPU per event (this process, all threads).
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
from redis.cluster import RedisCluster

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


# One script call per batch that does what a tagger with this output cannot leave out: each
# entry XADDed to the output as a tagged entry (its JSON with session fields, the four
# stream fields the tagger writes) and the batch acked. No validation, dedup or session
# state: a lower bound on the server's work, not a tagger.
FLOOR_LUA = """
local ids, suffix = {}, ',"session_id":"sess_0000000000000000","session_seq":1}'
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = ARGV[i]
  redis.call('XADD', KEYS[2], '*', 'data', string.sub(ARGV[i + 1], 1, -2) .. suffix,
    'user_id', 'u0000', 'session_id', 'sess_0000000000000000', 'kind', 'message')
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
"""


def floor_loop(client: Redis, stream: str) -> float:
    floor = client.register_script(FLOOR_LUA)
    started = time.perf_counter()
    while reply := client.xreadgroup("bench", "c", {stream: ">"}, count=500):
        args: list[bytes | str] = ["bench"]
        for entry_id, fields in reply[0][1]:
            args += [entry_id, fields[b"data"]]
        floor(keys=[stream, f"{stream}:tagged"], args=args)
    return time.perf_counter() - started


def server_cpu_s(client: Redis | RedisCluster) -> float | None:
    """CPU seconds of the server's main thread, when it runs on this machine (else None;
    also on a cluster, whose keys live on several servers)."""
    if isinstance(client, RedisCluster):
        return None
    pid = client.info("server")["process_id"]
    try:
        # A remote server's pid may name some other process here.
        if not Path(f"/proc/{pid}/comm").read_text().strip().endswith("-server"):
            return None
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
            line: dict[str, object] = {"round": round_no, "events": args.events}
            rates, server_us = {}, {}
            for name, run in (("plain", plain_copy_loop), ("floor", floor_loop), ("tagger", None)):
                # One hash tag for every key of a contender, so that the floor script may
                # touch the input and its copy on a cluster too.
                stream = f"bench:{{{uuid.uuid4().hex[:8]}}}"
                load(client, stream, payloads)
                cpu_before, own_before = server_cpu_s(client), time.process_time()
                seconds = run(client, stream) if run else tagger_burst(url, stream)
                cpu_after, own_s = server_cpu_s(client), time.process_time() - own_before
                rates[name] = args.events / seconds
                line[f"{name}_msg_s"] = round(rates[name])
                if not run:  # the worker runs in this process: its CPU, every thread
                    line["tagger_worker_us_per_event"] = round(own_s / args.events * 1e6, 1)
                if cpu_before is not None and cpu_after is not None:
                    server_us[name] = (cpu_after - cpu_before) / args.events * 1e6
                for key in client.scan_iter(f"{stream}*"):
                    client.delete(key)
            ratios.append(rates["tagger"] / rates["plain"])
            line["ratio"] = round(ratios[-1], 3)
            line["floor_ratio"] = round(rates["floor"] / rates["plain"], 3)
            if server_us:
                line["server_us_per_event"] = {k: round(v, 1) for k, v in server_us.items()}
                # How much of each run the server's main thread was busy: near 1, the
                # contender waits on the server; well below, the server waits on it.
                line["server_busy"] = {
                    k: round(v * rates[k] / 1e6, 2) for k, v in server_us.items()
                }
                # Even a server whose main thread did nothing but the floor's work, never
                # idle, could not tag faster than this.
                line["floor_server_bound_msg_s"] = round(1e6 / server_us["floor"])
            print(json.dumps(line))
        print(json.dumps({"median_ratio": round(statistics.median(ratios), 3)}))
    finally:
        if server:
            server.stop()


if __name__ == "__main__":
    main()
