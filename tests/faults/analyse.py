"""What the harness reads back: progress of the groups, redeliveries in the workers' logs,
and the final comparison of what was sent with the output stream, the JSONL logs, the
Parquet files and tests/reference.py's model of the rules."""

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import orjson
from redis import Redis
from redis.exceptions import RedisError

from tagger.times import epoch_ms, parse_time
from tests.faults.deployment import (
    DEAD,
    GROUP,
    INPUT,
    MAX_SESSION_S,
    OUTPUT,
    SESSION_TIMEOUT_S,
    Workload,
    sha256_hex,
)
from tests.reference import observed_partition, reference_partition

T = TypeVar("T")


def wait_until(condition: Any, timeout_s: float) -> float:
    """Seconds until condition() held (server errors count as not yet)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if condition():
                return time.monotonic() - started
        except RedisError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"not recovered within {timeout_s:.0f} s")


def retrying(call: Callable[[], T], timeout_s: float = 60.0) -> T:
    """call(), again while the server answers with an error (restarting, loading)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _id_key(stream_id: bytes) -> tuple[int, int]:
    ms, _, seq = stream_id.partition(b"-")
    return int(ms), int(seq)


def caught_up(client: Redis, stream: str, prefix: str, mark: bytes) -> bool:
    """Every entry of `stream` up to `mark` is done (delivered and acked) in each group
    whose name starts with `prefix`."""
    groups = [g for g in client.xinfo_groups(stream) if g["name"].decode().startswith(prefix)]
    for group in groups:
        if _id_key(group["last-delivered-id"]) < _id_key(mark):
            return False
        if group["pending"]:
            oldest: Any = client.xpending(stream, group["name"].decode())
            if oldest["min"] is not None and _id_key(oldest["min"]) <= _id_key(mark):
                return False
    return bool(groups)


def pending_of(client: Redis, stream: str, groups: tuple[str, ...], consumer: str) -> int:
    """Entries `consumer` read from `stream` in `groups` and has not acked."""
    total = 0
    for group in groups:
        for c in client.xinfo_consumers(stream, group):
            total += c["pending"] if c["name"] == consumer.encode() else 0
    return total


def pending_anywhere(client: Redis) -> int:
    """Entries read and not acked, in the taggers' group and the sinks'."""
    groups = [*client.xinfo_groups(INPUT), *client.xinfo_groups(OUTPUT)]
    return sum(g["pending"] for g in groups if g["name"].decode().startswith(GROUP))


def input_backlog(client: Redis) -> int:
    """Input entries the taggers have not acked yet (not read, or read and pending)."""
    group = next(g for g in client.xinfo_groups(INPUT) if g["name"] == GROUP.encode())
    return int(group.get("lag") or 0) + int(group["pending"])


def drained(client: Redis) -> bool:
    for stream, prefix in ((INPUT, GROUP), (OUTPUT, f"{GROUP}-")):
        for group in client.xinfo_groups(stream):
            lag = group.get("lag")
            if group["name"].decode().startswith(prefix) and (group["pending"] or lag != 0):
                return False
    return True


LogMarks = dict[str, int]  # log file name -> its size then


def log_marks(workdir: Path) -> LogMarks:
    return {log.name: log.stat().st_size for log in workdir.glob("*.log")}


def redeliveries(
    workdir: Path, since: LogMarks | None = None, until: LogMarks | None = None
) -> int:
    """Entries handed to a second consumer: claimed by a tagger or taken over by a sink;
    only in the log lines that start between the marks `since` and `until`, when given."""
    total = 0
    for log in workdir.glob("*.log"):
        start = (since or {}).get(log.name, 0)
        end = (until or {}).get(log.name, float("inf"))
        offset = 0
        for line in log.read_bytes().split(b"\n"):
            at, offset = offset, offset + len(line) + 1
            if start <= at < end and line.startswith(b"{"):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:  # a line a kill cut short
                    continue
                total += record.get("claimed", 0) + record.get("recovered", 0)
    return total


def model_sessions(work: Workload) -> set[frozenset[str]]:
    """The sessions tests/reference.py's model makes of the valid events, each at its
    first sending, in publishing order (the producer sends in order, one chunk at a time,
    and a chunk it sends again only repeats entries): the order the taggers read them.
    The overload burst's users and the trickles' are their own, so where they fall in
    that order does not matter."""
    seen: set[str] = set()
    events = []
    for payload in [*work.payloads, *work.burst, *work.extra]:
        try:
            e = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        rid = e.get("record_id") if isinstance(e, dict) else None
        if rid in work.valid and rid not in seen:
            seen.add(rid)
            moment = parse_time(e["timestamp"])
            assert moment is not None
            events.append((e["user_id"], epoch_ms(moment), rid))
    return reference_partition(events, SESSION_TIMEOUT_S * 1000, MAX_SESSION_S * 1000)


def analyse(
    client: Redis, data_dir: Path, work: Workload, foreign_written: dict[str, list[str]]
) -> dict[str, Any]:
    import pyarrow.dataset as ds

    output: dict[str, str] = {}
    duplicated_output = 0
    seqs: defaultdict[str, list[int]] = defaultdict(list)
    boundaries: defaultdict[str, list[str]] = defaultdict(list)
    for _id, fields in client.xrange(OUTPUT):
        event = orjson.loads(fields[b"data"])
        kind = fields[b"kind"].decode()
        sid = event["session_id"]
        boundaries[sid].append(kind)
        if kind != "message":
            continue
        duplicated_output += event["record_id"] in output
        output[event["record_id"]] = sid
        seqs[sid].append(event["session_seq"])
    # In order within a session: session_seq runs 1..n in stream order, start first,
    # end (if any) last.
    reordered = sum(s != list(range(1, len(s) + 1)) for s in seqs.values())
    reordered += sum(
        k[0] != "session.start" or "session.end" in k[:-1] for k in boundaries.values()
    )
    jsonl: dict[str, str] = {}
    duplicated_jsonl = torn_jsonl = 0
    foreign_found: dict[str, list[str]] = {}  # the second writer's lines, as found
    for path in (data_dir / "logs").rglob("*.jsonl"):
        data = path.read_bytes()
        torn_jsonl += bool(data) and not data.endswith(b"\n")
        for line in data.splitlines():
            record = orjson.loads(line)
            if "recorder" in record:  # the second writer's (tests/faults/cowriter.py)
                foreign_found.setdefault(str(path), []).append(sha256_hex(line))
                continue
            event = record["event"]
            if event.get("kind", "message") == "message":
                duplicated_jsonl += event["record_id"] in jsonl
                jsonl[event["record_id"]] = event["session_id"]
    table = ds.dataset(data_dir / "parquet" / "events", partitioning="hive").to_table(
        columns=["kind", "record_id", "session_id"]
    )
    parquet: dict[str, str] = {}
    duplicated_parquet = 0
    for kind, rid, sid in zip(*(table[c].to_pylist() for c in table.column_names), strict=True):
        if kind == "message":
            duplicated_parquet += rid in parquet
            parquet[rid] = sid
    dead = client.xrange(DEAD)
    reasons = Counter(f[b"reason"].decode() for _id, f in dead)
    # A dead letter keeps the entry's bytes, or (media) only their hash.
    dead_reason = {
        (f[b"data_sha256"].decode() if b"data_sha256" in f else sha256_hex(f[b"data"])): f[
            b"reason"
        ].decode()
        for _id, f in dead
    }
    valid = work.valid
    return {
        "accepted": len(valid),
        "dead_lettered": dict(sorted(reasons.items())),
        "bad_entries_not_dead_lettered": len(work.bad.keys() - dead_reason.keys()),
        "bad_entries_with_another_reason": sum(
            r not in ("?", dead_reason.get(sha, r)) for sha, r in work.bad.items()
        ),
        "good_entries_dead_lettered": len(dead_reason.keys() - work.bad.keys()),
        "unique_in_output": len(output),
        "unique_in_jsonl": len(jsonl),
        "unique_in_parquet": len(parquet),
        "lost": {
            "output": len(valid - output.keys()),
            "jsonl": len(valid - jsonl.keys()),
            "parquet": len(valid - parquet.keys()),
        },
        "duplicated": {
            "output": duplicated_output,
            "jsonl": duplicated_jsonl,
            "parquet": duplicated_parquet,
        },
        "reordered": reordered,
        "torn_jsonl_files": torn_jsonl,
        # The second writer's lines: each must be there once, whole, in its file.
        "foreign_lines": {
            "written": sum(map(len, foreign_written.values())),
            "lost_or_cut": sum(
                len(set(lines) - set(foreign_found.get(path, [])))
                for path, lines in foreign_written.items()
            ),
        },
        "session_id_mismatches": sum(
            jsonl.get(r) != s or parquet.get(r) != s for r, s in output.items()
        ),
        # Sessions of the output (record_ids grouped by session_id) that the model of the
        # rules does not make, and the other way round.
        "sessions_unlike_model": len(
            observed_partition({"record_id": r, "session_id": s} for r, s in output.items())
            ^ model_sessions(work)
        ),
        "unexpected_records": len(output.keys() - valid),
    }
