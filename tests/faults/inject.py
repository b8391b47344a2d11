"""The faults, each injected while work is in flight. An injector returns what it hit
(`in_flight`: entries read and not acked, or what stands for them) and, for the faults
the service reports, `detected_s`: how long until /ready (or an exit) said so."""

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from tagger.demo import user_timeline
from tests.conftest import free_port
from tests.faults.analyse import input_backlog, pending_anywhere, pending_of, retrying
from tests.faults.deployment import (
    ADDRESSES,
    CLAIM_IDLE_MS,
    GROUP,
    INPUT,
    OUTPUT,
    SESSION_TIMEOUT_S,
    SINK_GROUPS,
    T0_MS,
    TAGGERS,
    Deployment,
    Producer,
    ReadyWatch,
    Workload,
    publish,
)
from tests.netns import ROOT, Namespace

HOLD_S = 3.0  # a server refusing writes, a full disk: past the leases (1 s here)
PARTITION_S = 6.0  # past the workers' socket timeouts (5 s), so that their calls fail


@dataclass
class Context:
    deployment: Deployment
    client: Redis
    rng: random.Random
    watch: ReadyWatch
    work: Workload
    namespace: Namespace | None
    producer: Producer
    foreign_written: dict[str, list[str]] = field(default_factory=dict)


Injector = Callable[[Context], dict[str, Any]]


def freeze_with_work(ctx: Context, name: str, in_flight: Callable[[], int]) -> int:
    """SIGSTOP worker `name` at a moment it holds entries it read and has not acked
    (stopped and let go again until then); returns how many it holds."""
    proc = ctx.deployment.procs[name]
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
        nudge(ctx.producer)
        time.sleep(ctx.rng.uniform(0.0, 0.03))


def wait_for_work(ctx: Context, in_flight: Callable[[], int]) -> int:
    """Until in_flight() counts entries read and not acked; how many."""
    deadline = time.monotonic() + 60
    while not (held := retrying(in_flight)):
        if time.monotonic() > deadline:
            raise TimeoutError("no entries in flight for a server fault")
        nudge(ctx.producer)
        time.sleep(0.005)
    return held


def nudge(producer: Producer) -> None:
    """A producer held at the end of its share (everything tagged, nothing to catch in
    flight) may publish a little more: the next shares start later."""
    if producer.sent >= producer.limit:
        producer.limit = producer.sent + max(producer.rate // 10, 1)


def _freeze_owner(ctx: Context) -> tuple[str, int]:
    name = ctx.deployment.owner(ctx.client)  # the one tagging: the other only waits
    consumer = ctx.deployment.consumer(name)
    held = freeze_with_work(ctx, name, lambda: pending_of(ctx.client, INPUT, (GROUP,), consumer))
    return name, held


@contextlib.contextmanager
def trickle(ctx: Context, name: str, seconds: float = 3.0) -> Iterator[None]:
    """Valid events of users of the fault's own, published at the producer's rate while
    the fault lasts (all of them by its end): for the faults that bite only while the
    sinks write, whatever the main producer's share has left."""
    rng = random.Random(ctx.rng.randrange(1 << 30))
    users = [f"{name}{len(ctx.work.extra):05d}-{n}" for n in range(8)]
    per_user = max(1, int(ctx.producer.rate * seconds) // len(users))
    events = [e for u in users for e in user_timeline(rng, u, T0_MS, per_user, SESSION_TIMEOUT_S)]
    events.sort(key=lambda e: e["timestamp"])
    payloads = [orjson.dumps(e) for e in events]
    ctx.work.extra += payloads
    ctx.work.valid |= {e["record_id"] for e in events}
    producer = Producer(ctx.deployment.url, payloads, ctx.producer.rate)
    producer.start()
    try:
        yield
    finally:
        producer.join()


def kill_tagger(ctx: Context) -> dict[str, Any]:
    name, held = _freeze_owner(ctx)
    ctx.deployment.procs[name].kill()
    ctx.deployment.procs[name].wait()
    time.sleep(0.5)
    ctx.deployment.start(name)
    return {"in_flight": held}


def zombie_tagger(ctx: Context) -> dict[str, Any]:
    # Stopped past the claim threshold (and its lease): the other tagger claims its
    # entries; then it wakes up holding a batch it read before, and must not tag it again.
    name, held = _freeze_owner(ctx)
    time.sleep(CLAIM_IDLE_MS / 1000 * 3)
    ctx.deployment.procs[name].send_signal(signal.SIGCONT)
    return {"in_flight": held}


def kill_sinks(ctx: Context) -> dict[str, Any]:
    consumer = ctx.deployment.consumer("sinks")
    held = freeze_with_work(
        ctx, "sinks", lambda: pending_of(ctx.client, OUTPUT, SINK_GROUPS, consumer)
    )
    ctx.deployment.procs["sinks"].kill()
    ctx.deployment.procs["sinks"].wait()
    time.sleep(0.5)
    ctx.deployment.start("sinks")
    return {"in_flight": held}


def kill_server(ctx: Context) -> dict[str, Any]:
    # The sinks hold entries (the Parquet sink, a file's worth): after the restart their
    # leader takes them over again.
    consumer = ctx.deployment.consumer("sinks")
    held = wait_for_work(ctx, lambda: pending_of(ctx.client, OUTPUT, SINK_GROUPS, consumer))
    ctx.deployment.kill_server()
    return {"in_flight": held}


def stall_server(ctx: Context) -> dict[str, Any]:
    # Stalled past the partition's lease: the tagger that renews it first is a new owner
    # (a new epoch), the stalled one's batch refused if it was another's.
    held = wait_for_work(ctx, lambda: pending_anywhere(ctx.client))
    os.kill(ctx.deployment.server_pid(), signal.SIGSTOP)
    time.sleep(2.0)
    os.kill(ctx.deployment.server_pid(), signal.SIGCONT)
    return {"in_flight": held}


def partition(ctx: Context) -> dict[str, Any]:
    """The owner cut off from the server, packets dropped (no reset), while it holds a
    batch: the other tagger takes over; the cut-off one's commit, after the heal, is
    refused by its epoch."""
    assert ctx.namespace is not None
    name, held = _freeze_owner(ctx)
    ctx.namespace.partition(ctx.deployment.port, ADDRESSES[name])
    started = time.monotonic()
    ctx.deployment.procs[name].send_signal(signal.SIGCONT)
    time.sleep(PARTITION_S)
    ctx.namespace.heal()
    return {"in_flight": held, "detected_s": ctx.watch.first_after(started, (name,), "server")}


def _refuse_writes(
    ctx: Context, refuse: Callable[[], None], allow: Callable[[], None]
) -> dict[str, Any]:
    held = wait_for_work(ctx, lambda: pending_anywhere(ctx.client))
    refuse()
    started = time.monotonic()
    time.sleep(HOLD_S)
    allow()
    return {"in_flight": held, "detected_s": ctx.watch.first_after(started, TAGGERS, "writes")}


def oom_server(ctx: Context) -> dict[str, Any]:
    """maxmemory at half of what is used now, noeviction: every write refused with OOM
    (at what is used now, an ack that frees a little lets writes in again)."""

    def refuse() -> None:
        ctx.client.config_set("maxmemory-policy", "noeviction")
        used = int(ctx.client.info("memory")["used_memory"])
        ctx.client.config_set("maxmemory", str(used // 2))

    return _refuse_writes(ctx, refuse, lambda: ctx.client.config_set("maxmemory", "0"))


def readonly_server(ctx: Context) -> dict[str, Any]:
    """A replica of a primary that is not there (as after a failover): READONLY."""
    return _refuse_writes(
        ctx,
        lambda: ctx.client.replicaof("127.0.0.1", str(free_port())),
        lambda: ctx.client.replicaof("NO", "ONE"),
    )


def full_disk(ctx: Context) -> dict[str, Any]:
    """The data dir's filesystem filled while the sinks hold entries: they stop before
    acking what they could not write and exit 1 (restarted, as a supervisor would, and
    exiting again while it is full); then space is freed."""
    deployment = ctx.deployment
    consumer = deployment.consumer("sinks")
    held = wait_for_work(ctx, lambda: pending_of(ctx.client, OUTPUT, SINK_GROUPS, consumer))
    deployment.exits_expected_of.add("sinks")  # until the main loop says it recovered
    ballast = deployment.data_dir / "ballast"
    started = time.monotonic()
    # Unbuffered, so that close() has nothing left to flush; written until ENOSPC.
    with ballast.open("wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
    detected_s = None
    sinks = deployment.procs["sinks"]
    # The sinks hit the full disk once they write more than the slack at the end of each
    # file's last page.
    with trickle(ctx, "disk"):
        while time.monotonic() - started < 30 and sinks.poll() is None:
            time.sleep(0.01)
    if sinks.poll() is not None:
        detected_s = time.monotonic() - started
    time.sleep(max(0.0, started + HOLD_S - time.monotonic()))
    ballast_mib = ballast.stat().st_size >> 20
    ballast.unlink()
    return {
        "in_flight": held,
        "detected_s": detected_s,
        "sinks_exit_code": sinks.poll(),
        "ballast_mib": ballast_mib,
    }


def second_writer(ctx: Context) -> dict[str, Any]:
    """A second process appends large lines under flock to the session file the JSONL
    sink is writing now (of a trickle of events, begun a second before); `in_flight`
    counts the sink's own lines that came after the other's first line in a file."""
    logs = ctx.deployment.data_dir / "logs"
    with trickle(ctx, "cowriter", seconds=5.0):
        time.sleep(1.0)  # the trickle's users have session files, being written
        seed = str(ctx.rng.randrange(1 << 30))
        cowriter = [sys.executable, "-m", "tests.faults.cowriter", "--seconds", "3"]
        cowriter += ["--seed", seed, str(logs)]
        done = subprocess.run(cowriter, capture_output=True, timeout=60, cwd=ROOT, check=True)
    written: dict[str, list[str]] = orjson.loads(done.stdout)
    for path, lines in written.items():
        ctx.foreign_written.setdefault(path, []).extend(lines)
    after = sum(_own_lines_after_foreign(Path(p)) for p in written)
    return {"in_flight": after, "files": len(written)}


def _own_lines_after_foreign(path: Path) -> int:
    """The sink's complete lines in `path` after the second writer's first one (its
    lines have a "recorder")."""
    lines = path.read_bytes().split(b"\n")[:-1]
    foreign = [line.startswith(b'{"recorder"') for line in lines]
    if True not in foreign:
        return 0
    return sum(not f for f in foreign[foreign.index(True) :])


def overload(ctx: Context) -> dict[str, Any]:
    """A burst of valid events of users of its own, published as fast as one client can,
    on top of the steady producer: the input backlog grows past the /ready limit."""
    burst = ctx.work.burst
    started = time.monotonic()
    most = 0
    for i in range(0, len(burst), 1000):
        publish(ctx.client, burst[i : i + 1000])
        most = max(most, retrying(lambda: input_backlog(ctx.client)))
    time.sleep(0.5)  # a /ready answer or two more
    return {"in_flight": most, "detected_s": ctx.watch.first_after(started, TAGGERS, "input")}


FAULTS: dict[str, Injector] = {
    "kill_tagger": kill_tagger,
    "kill_sinks": kill_sinks,
    "kill_server": kill_server,
    "stall_server": stall_server,
    "zombie_tagger": zombie_tagger,
    "partition": partition,
    "oom_server": oom_server,
    "readonly_server": readonly_server,
    "full_disk": full_disk,
    "second_writer": second_writer,
    "overload": overload,
}
# Evidence that a fault interrupted work, besides the entries it hit (from the report).
HIT: dict[str, Callable[[dict[str, Any]], bool]] = {
    "kill_tagger": lambda f: f["redeliveries"] > 0 and f["takeovers"] > 0,
    "zombie_tagger": lambda f: f["redeliveries"] > 0 and f["takeovers"] > 0,
    "kill_sinks": lambda f: f["redeliveries"] > 0,
    "kill_server": lambda f: f["redeliveries"] > 0,
    "stall_server": lambda f: f["takeovers"] > 0,
    "partition": lambda f: f["takeovers"] > 0 and f["detected_s"] is not None,
    "oom_server": lambda f: f["detected_s"] is not None,
    "readonly_server": lambda f: f["detected_s"] is not None,
    "full_disk": lambda f: f["detected_s"] is not None and f["redeliveries"] > 0,
    "second_writer": lambda f: f["in_flight"] > 0,
    "overload": lambda f: f["detected_s"] is not None,
}
