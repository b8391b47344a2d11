"""python -m bench.overload: the options, capacity, then the overload run and its summary
(see bench/overload/__init__.py)."""

import argparse
import json
import signal
import sys
import time

import bench.overload
from bench.overload.capacity import measure_capacity
from bench.overload.run import overload


def main() -> None:
    # prog: the usage line as when this was bench/overload.py
    parser = argparse.ArgumentParser(
        prog="overload.py", description=bench.overload.__doc__.split("\n")[0]
    )
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
