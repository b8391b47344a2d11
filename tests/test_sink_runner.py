"""The file sinks' runner at a trickle: it reads (and acks) in batches rather than an
entry at a time, and renews its lease now and then rather than at every read: each read,
ack and renewal is a write the server fsyncs (appendfsync always) while the tagging's
commits wait. A recording sink (not a fake server) counts what each read brought."""

import asyncio
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from exporters.runner import Entry, SinkRunner
from tagger.connect import async_client, sync_client
from tests.conftest import SettingsFactory, streams, tagger_cmd, tagger_env, wait_for


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.reads: list[int] = []

    def add(self, entries: Sequence[Entry], recovering: bool) -> list[bytes]:
        self.reads.append(len(entries))
        return [entry_id for entry_id, _ in entries]

    def flush(self) -> list[bytes]:
        return []


def trickle(settings_linger_ms: int, make_settings: SettingsFactory) -> tuple[list[int], list[int]]:
    """30 entries 15 ms apart to a runner's stream; the entries each read brought, and the
    lease's time to live sampled meanwhile."""
    settings = make_settings(sink_linger_ms=settings_linger_ms, sink_lease_ms=6000)
    keys = streams(settings)
    sink = RecordingSink()
    assert settings.redis_url
    sync = sync_client(settings.redis_url)
    group, lease = keys.sink_group(sink.name), keys.sink_lease(sink.name)

    async def run() -> list[int]:
        client = async_client(settings.redis_url or "")
        runner = SinkRunner(client, settings, keys, sink, "c1")
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.to_thread(wait_for, lambda: sync.pttl(lease) > 0)
        ttls = []
        for n in range(30):
            sync.xadd(keys.output_stream, {"n": str(n)})
            ttls.append(sync.pttl(lease))
            await asyncio.sleep(0.015)
        await asyncio.to_thread(wait_for, lambda: sum(sink.reads) == 30)
        stop.set()
        await task
        await client.aclose()
        return ttls

    ttls = asyncio.run(run())
    assert sync.xpending(keys.output_stream, group)["pending"] == 0  # all acked
    sync.close()
    return [n for n in sink.reads if n], ttls


def test_at_a_trickle_the_sink_reads_in_batches(make_settings: SettingsFactory) -> None:
    reads, _ = trickle(250, make_settings)
    assert sum(reads) == 30
    # ~450 ms of entries, a read every 250 ms: a handful; an entry a read would be ~30.
    assert len(reads) <= 6, reads


def test_without_linger_it_reads_as_entries_come(make_settings: SettingsFactory) -> None:
    reads, _ = trickle(0, make_settings)  # what the linger saves, shown in the same test run
    assert sum(reads) == 30 and len(reads) > 6, reads


def test_the_lease_is_renewed_now_and_then_not_at_every_read(
    make_settings: SettingsFactory,
) -> None:
    _, ttls = trickle(0, make_settings)  # a read every 15 ms
    assert all(ttl > 0 for ttl in ttls), ttls  # held throughout
    # Renewed every sixth of its 6 s, it runs down by up to 1 s between renewals; renewed
    # at every read, it would never be below ~5.9 s.
    assert min(ttls) < 5700, ttls


def test_the_sinks_process_runs_at_its_niceness(make_settings: SettingsFactory) -> None:
    """`tagger run` starts the file sinks' process at TAGGER_SINKS_NICE: on a machine short
    of CPU the tagging goes first (docs/performance.md, latency)."""
    settings = make_settings(sinks_nice=7)
    worker = subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings), stderr=subprocess.PIPE)
    try:
        children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children")
        child = wait_for(lambda: children.read_text().split())[0]
        assert os.getpriority(os.PRIO_PROCESS, int(child)) == os.getpriority(os.PRIO_PROCESS, 0) + 7
        assert os.getpriority(os.PRIO_PROCESS, worker.pid) == os.getpriority(os.PRIO_PROCESS, 0)
        # SIGTERM before the worker installs its handler kills it outright (a CI run: -15).
        wait_for(lambda: catches(worker.pid, signal.SIGTERM))
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err.decode()[-2000:]


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler of its own for `signum` (/proc: SigCgt)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False
