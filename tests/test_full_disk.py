"""A full disk, for real: the data dir on a small tmpfs of the test's own, filled during a
run. The sinks stop before acking what they could not write, the worker says so and
exits 1 (docs/operators.md, Faults); after space is freed a rerun stores everything
exactly once, with no torn line in any JSONL file and every Parquet file readable."""

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from redis import Redis

from tagger.settings import Settings
from tests.conftest import SettingsFactory, event, publish, tagger_cmd, tagger_env


def _can_mount() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mounts a small tmpfs)"
    return None


pytestmark = pytest.mark.skipif(_can_mount() is not None, reason=_can_mount() or "")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a ballast file until the filesystem is full; it is removed to free space."""
    ballast = disk / "ballast"
    with ballast.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return ballast


def stored(settings: Settings) -> tuple[list[str], list[str]]:
    """Record ids of the messages in the JSONL files and in Parquet (each file read whole)."""
    in_jsonl: list[str] = []
    for log in (settings.data_dir / "logs").rglob("*.jsonl"):
        data = log.read_bytes()
        assert not data or data.endswith(b"\n"), f"torn last line in {log}"
        for line in data.splitlines():
            record = orjson.loads(line)["event"]  # every line parses
            if record.get("kind", "message") == "message":
                in_jsonl.append(record["record_id"])
    in_parquet: list[str] = []
    for part in (settings.data_dir / "parquet" / "events").rglob("*.parquet"):
        rows = pq.read_table(part).to_pylist()  # every file readable
        in_parquet += [r["record_id"] for r in rows if r["kind"] == "message"]
    return in_jsonl, in_parquet


def test_a_full_disk_stops_the_sinks_and_a_rerun_stores_everything_once(
    client: Redis, make_settings: SettingsFactory, small_disk: Path
) -> None:
    settings = make_settings(data_dir=small_disk / "data")
    env = tagger_env(settings)
    now = int(time.time() * 1000)
    first = [event(f"u{n % 4}", now + n, notes="x" * 2000) for n in range(200)]
    publish(client, settings, first)
    run = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    ballast = fill(small_disk)
    second = [event(f"u{n % 4}", now + 1000 + n, notes="y" * 2000) for n in range(400)]
    publish(client, settings, second)
    full = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=120)
    assert full.returncode == 1, full.stderr
    said = full.stderr.decode()
    assert "No space left on device" in said or "disk" in said, said

    ballast.unlink()
    rerun = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    in_jsonl, in_parquet = stored(settings)
    sent = sorted(e["record_id"] for e in first + second)
    assert sorted(in_jsonl) == sent  # exactly once, nothing torn
    assert sorted(in_parquet) == sent
