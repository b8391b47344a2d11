"""The short version of the fault-injection harness (tests/faults/) that CI runs."""

import os
import subprocess
import sys

import orjson

from tests import netns

EVERY_FAULT = {
    "kill_tagger", "kill_sinks", "kill_server", "stall_server", "zombie_tagger", "partition",
    "oom_server", "readonly_server", "full_disk", "second_writer", "overload",
}  # fmt: skip


def test_harness_loses_doubles_and_reorders_nothing_through_every_fault() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.faults", "--events", "2500", "--rate", "250", "--seed", "3"],
        capture_output=True,
        timeout=400,
    )
    report = orjson.loads(done.stdout.splitlines()[-1])
    assert done.returncode == 0, report
    accepted = report["accepted"]
    assert accepted > 2500  # and the overload's burst, and the trickles of the sink faults
    assert report["unique_in_output"] == report["unique_in_jsonl"] == accepted
    assert report["unique_in_parquet"] == accepted
    # Where this machine cannot make a namespace or mount a tmpfs, those two are left out
    # and the report says why; CI runs as root, so there every fault is injected.
    expected = set(EVERY_FAULT)
    if netns.available() is not None:
        expected.discard("partition")
    if os.geteuid() != 0:
        expected.discard("full_disk")
    assert {f["fault"] for f in report["faults"]} == expected, report["skipped"]
    assert report["unexpected_exits"] == {}  # every worker rode out the server's faults
    # Sessions as the model of the rules makes them (tests/reference.py).
    assert report["sessions_unlike_model"] == 0
    # Input a device with a wrong clock sent, and input upstream's model refuses: each
    # dead-lettered with its own reason, nothing else lost.
    for reason in ("clock_ahead", "bad_capture_id", "annotation_outside_capture_open",
                   "bad_raw_features_ref"):  # fmt: skip
        assert report["dead_lettered"].get(reason, 0) > 0, report["dead_lettered"]
    assert report["bad_entries_with_another_reason"] == 0
    assert report["torn_jsonl_files"] == 0
    assert report["ready_errors"] == 0  # /ready answered 200 or its own 503, never a 500
    if "second_writer" in expected:  # its lines all there, whole
        assert report["foreign_lines"]["written"] > 0
        assert report["foreign_lines"]["lost_or_cut"] == 0
    # Each fault landed on work in flight and made the service redeliver, take over or
    # say so (/ready, an exit).
    for fault in report["faults"]:
        name = fault["fault"]
        assert fault["published_at_start"] < report["sent"], fault  # still publishing
        assert fault["in_flight"] > 0 and fault["hit"], fault
        if name in ("kill_tagger", "zombie_tagger"):  # the owner, holding entries
            assert fault["redeliveries"] > 0 and fault["takeovers"] > 0, fault
        elif name in ("kill_sinks", "kill_server"):  # the sinks' leader takes over
            assert fault["redeliveries"] > 0, fault
        elif name == "stall_server":  # past the partition's lease: a new owner epoch
            assert fault["takeovers"] > 0, fault
        elif name == "partition":  # the other tagger took over; /ready said so
            assert fault["takeovers"] > 0 and fault["detected_s"] < 5, fault
        elif name in ("oom_server", "readonly_server", "overload"):  # /ready said so
            assert fault["detected_s"] < 5, fault
        elif name == "full_disk":  # the sinks stopped, exit 1, and were taken over
            assert fault["sinks_exit_code"] == 1 and fault["redeliveries"] > 0, fault
