"""The benchmarks run (tiny versions): CI checks they work, not how fast anything is."""

import shutil
import subprocess
import sys

import orjson
import pytest


def bench(*args: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=240
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_throughput_bench_prints_rounds_and_a_median() -> None:
    lines = bench("bench.throughput", "--events", "3000", "--users", "50", "--rounds", "2")
    rounds, (summary,) = lines[:-1], lines[-1:]
    assert len(rounds) == 2
    assert all(r["plain_msg_s"] and r["floor_msg_s"] and r["tagger_msg_s"] for r in rounds)
    # The embedded server runs here, so its CPU per event is read for every contender.
    assert all(set(r["server_us_per_event"]) == {"plain", "floor", "tagger"} for r in rounds)
    assert summary["median_ratio"]


def test_latency_bench_prints_percentiles() -> None:
    (line,) = bench("bench.latency", "--rate", "200", "--seconds", "3")
    assert line["arrived"] == line["measured"] > 0
    assert 0 < line["p50_ms"] <= line["p99_ms"] <= line["max_ms"]


def test_memory_bench_prints_growth() -> None:
    (line,) = bench("bench.memory", "--events", "20000", "--users", "20")
    assert line["rss_mb_at_end"] > 0 and "growth_pct" in line
    assert max(line["peak_mb_by_tenth"]) >= line["rss_mb_at_end"]


def test_scale_bench_prints_one_and_two_workers() -> None:
    lines = bench("bench.scale", "--events", "2000", "--users", "20", "--rounds", "1")
    assert [line.get("workers") for line in lines[:-1]] == [1, 2]
    assert lines[-1]["median_ratio_two_to_one"] > 0


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="bench.instructions needs valgrind")
def test_instructions_bench_counts_the_server_work_per_event() -> None:
    (line,) = bench("bench.instructions", "--events", "300", "--users", "20", "--batch", "50")
    assert line["tagged"] == 300 and line["server_instructions_per_event"] > 1000
    (floor,) = bench("bench.instructions", "--events", "300", "--users", "20", "--floor")
    assert floor["tagged"] == 300
    assert 1000 < floor["server_instructions_per_event"] < line["server_instructions_per_event"]


def test_worker_cpu_bench_prints_each_stage() -> None:
    (line,) = bench("bench.worker_cpu", "--events", "2000", "--users", "20", "--repeat", "1")
    assert set(line["us_per_event"]) == {"check", "rules", "commit", "pack"}
    assert line["us_per_event_total"] > 0
