"""The file sinks in a process of their own, beside the tagging worker (`tagger run`).

In the worker's process they shared its event loop: a Parquet file written or a JSONL
batch fsynced held up the next commit. Measured with bench.latency (2,000 events/s, 30 s,
appendfsync always), sinks in the same process: p50 6.2-6.8 ms, p99 85-105 ms; tagging
alone: p50 3.3 ms, p99 6.5 ms (plain copy loop: 2.1 ms, 5.3 ms). On two cores the two
processes still compete for CPU: the sinks' process runs at TAGGER_SINKS_NICE (10), which
took the tagging's p50 from 4.15-4.18 to 3.81-3.83 ms and p99 from 10-14 to 9.1-9.3 ms
(niceness 19: p50 3.64-3.75 ms, kept for operators who want it; see docs/performance.md)."""

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from tagger.connect import pause
from tagger.errors import WorkerFailed

PR_SET_PDEATHSIG = 1  # linux/prctl.h
STOP_TIMEOUT_S = 60.0


def _child_setup(niceness: int) -> Callable[[], None]:
    def setup() -> None:
        # A worker killed outright (kill -9) must not leave its sinks running on their
        # own: they get SIGTERM, finish the batch in hand (stored, then acked) and exit.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        os.nice(niceness)

    return setup


class SinksProcess:
    """`tagger run --sinks-only` as a child, on the same server, logging to our stderr."""

    def __init__(self, url: str, verbose: bool, niceness: int = 0) -> None:
        env = {**os.environ, "TAGGER_REDIS_URL": url, "TAGGER_METRICS_PORT": "0"}
        # Never --burst: on its own it could not tell that the tagging is not done; the
        # worker's burst waits for the sinks' groups too, and then stops it.
        command = [sys.executable, "-m", "tagger", *(["-v"] if verbose else []), "run",
                   "--sinks-only"]  # fmt: skip
        preexec = _child_setup(niceness) if sys.platform == "linux" else None
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, preexec_fn=preexec
        )

    async def watch(self, stopping: asyncio.Event) -> None:
        """Return when the worker stops; raise WorkerFailed (which stops it) when the
        sinks process exits on its own."""
        while not stopping.is_set():
            code = self.process.poll()
            if code is not None:
                raise WorkerFailed(
                    f"the file sinks process exited with code {code} (its error is logged "
                    "above); nothing it had not stored was acked. Fix the cause (disk "
                    "space, permissions on TAGGER_DATA_DIR) and restart."
                )
            await pause(stopping, 0.2)

    def stop(self) -> int:
        """Ask it to finish (SIGTERM: it stores and acks the batch in hand) and wait; its
        exit code, 0 too when our SIGTERM ended it before it had set up its handler (it
        had acked nothing then)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        return 0 if code == -signal.SIGTERM else code
