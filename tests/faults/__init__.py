"""Fault-injection harness: real processes, real crashes, real network, disk and server
faults, a JSON report.

    python -m tests.faults [--events 20000] [--rate 500] [--users 40] [--seed 1]

Starts its own Valkey (loopback, AOF appendfsync always), two `tagger run --no-sinks`
workers and one `tagger run --sinks-only`, publishes a seeded workload (valid events,
re-sent duplicates, broken entries, events of a device whose clock is a year ahead,
events upstream's A3CPMessage refuses) at a steady rate, and meanwhile injects faults in
a seeded order (tests/faults/inject.py): kill -9 of a tagger, of the sinks and of the
server (each restarted, as a supervisor would), a server stall (SIGSTOP/SIGCONT), a
zombie tagger (stopped past the claim threshold, then resumed), a network partition of
the owner (packets dropped), a server refusing writes (out of memory; read-only), a full
disk under the data dir, a second writer of the JSONL files (flock, large lines) and an
overload burst.

Run as root where network namespaces work, it runs whole inside a namespace of its own
(tests/netns.py) with the data dir on a tmpfs of its own; elsewhere the partition and
the full disk are left out, and the report says why (`skipped`).

Faults land on work in flight: fault n of N fires when the producer is halfway through
its n-th share of the payloads, and the producer may not start the next share before
fault n is over, so publishing goes on through every fault. Per fault the report counts
the redeliveries that followed it (`claimed` by a new owner, `recovered` by a sink's new
leader, from the JSON logs), the partition's new owners, what it hit, how long until the
service reported it (`detected_s`, from /ready or an exit) and until it caught up.

When the input is drained it compares what was sent with the output stream, the JSONL
logs and the Parquet files, and the sessions with tests/reference.py's model of the rules
(fed the valid events in publishing order), prints one JSON report and exits 1 unless
lost, duplicated, reordered and mismatched are all 0, every bad entry is dead-lettered
with its reason, the second writer's lines are all there whole, and every fault hit
work."""
