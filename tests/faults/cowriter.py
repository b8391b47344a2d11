"""A second writer of the session JSONL files, as A3CP's schema_recorder is: one line per
write, O_APPEND under flock(LOCK_EX) (gesturelabs/a3cp, apps/schema_recorder/
repository.py), lines of up to 512 KiB.

    python -m tests.faults.cowriter --seconds 3 --seed 1 LOGS_DIR

About ten lines a second, each to the session file under LOGS_DIR written last (the one
the sink is writing now: a session's file goes quiet once it ends), never a new file;
prints what it wrote as JSON: {file: [SHA-256 of each line, without its newline]}."""

import argparse
import fcntl
import hashlib
import os
import random
import sys
import time
from pathlib import Path

import orjson


def append_line(path: str, line: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(line + b"\n")
        while view:  # a large write may be taken in parts; the lock keeps them together
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)  # and the lock with it


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("logs", type=Path)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    written: dict[str, list[str]] = {}
    deadline = time.monotonic() + args.seconds
    n = 0
    while time.monotonic() < deadline:
        path = str(max(args.logs.rglob("*.jsonl"), key=lambda p: p.stat().st_mtime))
        size = rng.choice((1024, 64 * 1024, 256 * 1024, 512 * 1024))
        record = {"recorder": "schema_recorder", "n": n, "pad": "x" * size}
        line = orjson.dumps(record)
        append_line(path, line)
        written.setdefault(path, []).append(hashlib.sha256(line).hexdigest())
        n += 1
        time.sleep(0.1)
    print(orjson.dumps(written).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
