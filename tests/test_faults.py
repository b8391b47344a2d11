"""The short version of the fault-injection harness (tests/faults.py) that CI runs."""

import subprocess
import sys

import orjson


def test_harness_loses_doubles_and_reorders_nothing_through_every_fault() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults", "--events", "2500", "--rate", "250", "--seed", "3"],
        capture_output=True,
        timeout=280,
    )
    report = orjson.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 0, report
    assert report["accepted"] == 2500
    assert report["unique_in_output"] == report["unique_in_jsonl"] == 2500
    assert report["unique_in_parquet"] == 2500
    assert {f["fault"] for f in report["faults"]} == {
        "kill_tagger",
        "kill_sinks",
        "kill_server",
        "stall_server",
        "zombie_tagger",
    }
    assert report["unexpected_exits"] == {}  # every worker rode out the server's faults
    # Sessions as the model of the rules makes them (tests/reference.py).
    assert report["sessions_unlike_model"] == 0
    # Each fault landed on work in flight, and made the service redeliver or take over.
    for fault in report["faults"]:
        assert fault["published_at_start"] < report["sent"], fault  # still publishing
        assert fault["in_flight"] > 0, fault
        if fault["fault"] in ("kill_tagger", "zombie_tagger"):  # the owner, holding entries
            assert fault["redeliveries"] > 0 and fault["takeovers"] > 0, fault
        elif fault["fault"] in ("kill_sinks", "kill_server"):  # the sinks' leader takes over
            assert fault["redeliveries"] > 0, fault
        else:  # stall_server, past the partition's lease: a new owner epoch
            assert fault["takeovers"] > 0, fault
