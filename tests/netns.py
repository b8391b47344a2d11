"""A network namespace of the test's own, for network faults on loopback addresses only.

Inside it a Valkey server listens on 127.0.0.1 and 127.0.0.2 (same port). The worker
under test reaches it at 127.0.0.2, everything else (the producer, the checks) at
127.0.0.1, so a partition of the worker alone is one tc filter: the namespace's loopback
ingress, for packets to 127.0.0.2:<port>, redirected to an ifb device that is down,
which drops them silently (no reset: a pulled cable; this kernel has no netem).
Needs root and `ip`/`tc`; `available()` says why not where they are missing.

Run as `python -m tests.netns <command>` inside the namespace, it is the test's hands
there: publish events, read the output, ask a worker's /ready."""

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parent.parent


def available() -> str | None:
    """None when namespaces can be made here; else why not."""
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2)"
    probe = f"tprobe{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace ({made.stderr.strip()}); needs root"
    try:
        ifb = _run(["ip", "netns", "exec", probe, "ip", "link", "add", "ifbp", "type", "ifb"])
        if ifb.returncode != 0:
            return f"no ifb device in this kernel ({ifb.stderr.strip()})"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


class Namespace:
    def __init__(self, existing: str | None = None) -> None:
        """A new namespace; or, given its name, one made before (by a parent process)."""
        self.partitioned = False
        if existing is not None:
            self.name = existing
            return
        self.name = f"tagger{uuid.uuid4().hex[:8]}"
        _run(["ip", "netns", "add", self.name]).check_returncode()
        self.sh("ip", "link", "set", "lo", "up")
        self.sh("ip", "link", "add", "ifb0", "type", "ifb")  # left down: a black hole
        self.sh("tc", "qdisc", "add", "dev", "lo", "ingress")

    def cmd(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def sh(self, *args: str) -> str:
        done = _run(self.cmd(*args))
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def popen(self, args: list[str], **options: Any) -> "subprocess.Popen[bytes]":
        return subprocess.Popen(self.cmd(*args), **options)

    def partition(self, port: int, address: str = "127.0.0.2") -> None:
        """Drop every packet to address:port, silently."""
        self.sh("tc", "filter", "add", "dev", "lo", "parent", "ffff:", "protocol", "ip",
                "u32", "match", "ip", "dst", f"{address}/32", "match", "ip", "dport", str(port),
                "0xffff", "action", "mirred", "egress", "redirect", "dev", "ifb0")  # fmt: skip
        self.partitioned = True

    def heal(self) -> None:
        self.sh("tc", "filter", "del", "dev", "lo", "parent", "ffff:")
        self.partitioned = False

    def tool(self, *args: str, timeout_s: float = 60) -> Any:
        """Run this module's command inside the namespace; its JSON answer."""
        done = subprocess.run(
            self.cmd(sys.executable, "-m", "tests.netns", *args),
            capture_output=True, text=True, timeout=timeout_s, cwd=ROOT,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"tests.netns {' '.join(args)}: {done.stderr.strip()}")
        return json.loads(done.stdout)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


# -- inside the namespace -------------------------------------------------------------------


def _publish(url: str, first: int, count: int, rate: float, users: int) -> list[str]:
    from redis import Redis

    client = Redis.from_url(url)
    sent = []
    started = time.monotonic()
    for n in range(first, first + count):
        record_id = str(uuid.UUID(int=n + 1, version=4))
        event = {"schema_version": "1.0.1", "record_id": record_id,
                 "user_id": f"net{n % users:02d}",
                 "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
                 + f".{int(time.time() * 1000) % 1000:03d}Z",
                 "modality": "gesture", "source": "gesture_classifier"}  # fmt: skip
        client.xadd("a3cp:messages", {"data": json.dumps(event)})
        sent.append(record_id)
        time.sleep(max(0.0, started + (n - first + 1) / rate - time.monotonic()))
    return sent


def _tagged(url: str) -> dict[str, list[str]]:
    from redis import Redis

    client = Redis.from_url(url)
    found: dict[str, list[str]] = {}
    entries: Any = client.xrange("a3cp:messages:tagged")
    for _id, fields in entries:
        if fields.get(b"kind") == b"message":
            event = json.loads(fields[b"data"])
            found.setdefault(event["record_id"], []).append(event["session_id"])
    return found


def _ready(port: int) -> dict[str, Any]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=30) as reply:
            status, body = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    return {"status": status, "seconds": time.monotonic() - started, "body": json.loads(body)}


if __name__ == "__main__":
    command, *rest = sys.argv[1:]
    if command == "publish":
        url, first, count, rate, users = rest
        print(json.dumps(_publish(url, int(first), int(count), float(rate), int(users))))
    elif command == "tagged":
        print(json.dumps(_tagged(rest[0])))
    elif command == "ready":
        print(json.dumps(_ready(int(rest[0]))))
    else:
        raise SystemExit(f"unknown command {command}")
