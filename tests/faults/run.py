"""The harness's run: the schedule of faults over the publishing, the recovery after each,
and the report (tests/faults/__init__.py says what it proves)."""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from redis import Redis

from tests import netns
from tests.faults import __doc__ as HARNESS_DOC
from tests.faults.analyse import (
    analyse,
    caught_up,
    drained,
    log_marks,
    redeliveries,
    retrying,
    wait_until,
)
from tests.faults.deployment import (
    EPOCH,
    GROUP,
    INPUT,
    OUTPUT,
    Deployment,
    Producer,
    ReadyWatch,
    workload,
)
from tests.faults.inject import FAULTS, HIT, Context


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.faults", description=(HARNESS_DOC or "").split("\n")[0]
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="events published per second")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--burst", type=int, default=10_000, help="events of the overload fault")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--only", help="these faults alone, comma-separated (default: all)")
    parser.add_argument("--no-netns", action="store_true", help="run in the host's network")
    parser.add_argument("--netns", help=argparse.SUPPRESS)  # set by the namespace's parent
    args = parser.parse_args()
    if args.netns is None and not args.no_netns and (why := netns.available()) is None:
        return _in_a_namespace(sys.argv[1:])
    skipped: dict[str, str] = {}
    if args.netns is None:
        skipped["partition"] = "--no-netns" if args.no_netns else str(why)
    if os.geteuid() != 0:
        skipped["full_disk"] = "needs root (mounts a tmpfs for the data dir)"
    if args.only and (unknown := set(args.only.split(",")) - FAULTS.keys()):
        parser.error(f"no such fault: {', '.join(sorted(unknown))}; pick from {', '.join(FAULTS)}")
    chosen = args.only.split(",") if args.only else list(FAULTS)
    faults = [f for f in chosen if f not in skipped]
    if not faults:
        parser.error(f"every fault asked for is left out here: {skipped}")
    report = run(args, faults)
    report["skipped"] = skipped
    print(json.dumps(report))
    failed = (
        any(report["lost"].values())
        or any(report["duplicated"].values())
        or report["reordered"]
        or report["torn_jsonl_files"]
        or report["ready_errors"]
        or report["foreign_lines"]["lost_or_cut"]
        or report["session_id_mismatches"]
        or report["sessions_unlike_model"]
        or not all(f["hit"] for f in report["faults"])
        or report["unexpected_records"]
        or report["bad_entries_not_dead_lettered"]
        or report["bad_entries_with_another_reason"]
        or report["good_entries_dead_lettered"]
    )
    return 1 if failed else 0


def _in_a_namespace(argv: list[str]) -> int:
    """Run this harness again, whole, inside a network namespace of its own."""
    namespace = netns.Namespace()
    try:
        inner = [sys.executable, "-m", "tests.faults", *argv, "--netns", namespace.name]
        return subprocess.run(namespace.cmd(*inner), cwd=netns.ROOT).returncode
    finally:
        namespace.close()


def run(args: argparse.Namespace, faults: list[str]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    work = workload(args.seed, args.events, args.users, args.burst if "overload" in faults else 0)
    workdir = Path(tempfile.mkdtemp(prefix="tagger-faults-"))
    deployment = Deployment(workdir, args.netns, small_disk="full_disk" in faults)
    client = Redis.from_url(deployment.url, socket_timeout=5)
    watch = ReadyWatch(deployment.metrics_ports)
    namespace = netns.Namespace(existing=args.netns) if args.netns else None
    producer = Producer(deployment.url, work.payloads, args.rate)
    ctx = Context(deployment, client, rng, watch, work, namespace, producer)
    try:
        wait_until(lambda: any(g["name"] == GROUP.encode() for g in client.xinfo_groups(INPUT)), 60)
        watch.start()
        publish_s = len(work.payloads) / args.rate
        # Each kind at least once, the rest in a seeded order, spread over the publishing.
        n_faults = max(len(faults), int(publish_s // 5))
        schedule = [*faults, *rng.choices(faults, k=n_faults - len(faults))]
        rng.shuffle(schedule)
        recoveries: list[dict[str, Any]] = []
        marks, epochs = [], []  # log sizes and the owner epoch at each fault's start
        started = time.monotonic()
        producer.limit = 0
        producer.start()
        for n, fault in enumerate(schedule):
            # Halfway through share n of what is left to publish (a fault may have let the
            # producer run ahead), with the rest of the share to publish meanwhile.
            start = producer.limit
            share = (len(work.payloads) - start) / (n_faults - n)
            producer.limit = round(start + share)
            halfway = start + share / 2
            wait_until(lambda h=halfway: producer.sent >= h, 600)
            marks.append(log_marks(workdir))
            epochs.append(int(retrying(lambda: client.get(EPOCH)) or 0))
            sent_before = producer.sent
            hit = FAULTS[fault](ctx)
            ended = time.monotonic()
            # Recovered: every entry there was when the fault ended is done, by the
            # taggers and by the JSONL audit log (the Parquet sink acks when it rolls a
            # file, up to a minute later by design).
            marks_at_end = {s: retrying(lambda s=s: client.xrevrange(s, count=1)[0][0])
                            for s in (INPUT, OUTPUT)}  # fmt: skip

            def recovered(at: dict[str, bytes] = marks_at_end) -> bool:
                deployment.check_alive()
                return caught_up(client, INPUT, GROUP, at[INPUT]) and caught_up(
                    client, OUTPUT, f"{GROUP}-jsonl", at[OUTPUT]
                )

            try:
                wait_until(recovered, 120)
            except TimeoutError as exc:
                for proc in deployment.procs.values():  # each logs where its tasks wait
                    proc.send_signal(signal.SIGUSR1)
                time.sleep(1)
                raise TimeoutError(f"fault {n} ({fault}): {exc}; logs in {workdir}") from exc
            recoveries.append(
                {
                    "fault": fault,
                    **hit,
                    "published_at_start": sent_before,  # of len(payloads): not done yet
                    "published_meanwhile": producer.sent - sent_before,  # through recovery
                    "recovered_s": round(time.monotonic() - ended, 3),
                }
            )
            deployment.exits_expected_of.clear()
        producer.limit = len(work.payloads)
        producer.join()
        wait_until(lambda: drained(client), args.drain_timeout)
        deployment.check_alive()
        # Per fault, from its start to the next fault's start: the redeliveries logged and
        # the new owners of the partition.
        epochs.append(int(retrying(lambda: client.get(EPOCH)) or 0))
        for n, fault_report in enumerate(recoveries):
            until = marks[n + 1] if n + 1 < len(marks) else None
            fault_report["redeliveries"] = redeliveries(workdir, marks[n], until)
            fault_report["takeovers"] = epochs[n + 1] - epochs[n]
            fault_report["hit"] = fault_report["in_flight"] > 0 and HIT[fault_report["fault"]](
                fault_report
            )
            if fault_report.get("detected_s") is not None:
                fault_report["detected_s"] = round(fault_report["detected_s"], 3)
        return {
            "seed": args.seed,
            "sent": len(work.payloads) + len(work.burst) + len(work.extra),
            **analyse(client, deployment.data_dir, work, ctx.foreign_written),
            "redeliveries": redeliveries(workdir),
            "producer_retries": producer.retries,
            # /ready answers that were not its own (a 500: an error it did not handle).
            "ready_errors": sum(
                any(f.startswith("HTTP ") for f in failed) for _at, _name, failed in watch.not_ready
            ),
            "unexpected_exits": dict(deployment.unexpected_exits),
            "expected_exits": dict(deployment.expected_exits),
            "faults": recoveries,
            "elapsed_s": round(time.monotonic() - started, 1),
            "workdir": str(workdir),
        }
    finally:
        watch.stopped.set()
        deployment.stop()
        deployment.unmount()
