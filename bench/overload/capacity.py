"""Step 1 of the overload run, capacity: how fast `tagger run --burst` tags a backlog and
writes it to the files."""

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.overload.probes import input_backlog
from bench.overload.producer import publish_backlog, run_prefix
from bench.overload.worker import start_worker
from bench.servers import start_valkey
from tagger.connect import sync_client


def measure_capacity(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="tagger-overload-capacity-"))
    server, url = start_valkey(workdir, args.appendfsync)
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
