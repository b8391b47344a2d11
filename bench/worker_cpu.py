"""The tag worker's own CPU per event, with no server: what bounds `tagger run --burst`.

    python -m bench.worker_cpu [--events 50000] [--users 500] [--batch 500] [--repeat 3]
                               [--script]

The backlog is bench.throughput's (the demo's events). Each stage is timed with
time.process_time (CPU of this process, so other work on a shared machine moves it less
than wall time), over the whole backlog in batches, the best of `--repeat` runs:
- check: the intake check of a batch (`Checked`, what runs in a thread);
- rules: the session rules of a checked batch (`tag`) and the owner's memory after it;
- commit: the commit's commands (`build_commit`);
- pack: the bytes sent: the MULTI/EXEC transaction's (tagger/runtime/transaction.py), or
  with `--script` the script's arguments (`Commit.args`) packed by redis-py's asyncio
  connection. (Reading the replies is not counted: there is no server.)
One JSON line: µs per event of each stage and in all. The session history a real owner
reads from the registry is kept here in memory, from what each batch opened.
"""

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio.connection import Connection

import tagger.connect  # noqa: F401  (the worker's packing of commands, see there)
from bench.throughput import backlog
from tagger.keys import Keys
from tagger.rules import CounterNames, Limits, SessionState, Span, needs_history, tag
from tagger.runtime.commit import Commit, build_commit
from tagger.runtime.owner import Checked, Entry
from tagger.runtime.transaction import checks_of, commands_of
from tagger.settings import Settings


def entries_of(payloads: list[bytes], batch: int) -> list[list[Entry]]:
    """The backlog as input batches; ids stamped now, so no event is ahead of its arrival."""
    now_ms = int(time.time() * 1000)
    entries = [(f"{now_ms}-{n}".encode(), {b"data": p}) for n, p in enumerate(payloads)]
    return [entries[i : i + batch] for i in range(0, len(entries), batch)]


def best_of(repeat: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Each stage's least CPU seconds over `repeat` runs."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        for stage, seconds in run().items():
            best[stage] = min(best.get(stage, seconds), seconds)
    return best


def script_packer(keys: Keys) -> Callable[[Commit, int], Any]:
    packer = Connection()  # never connected: only its pack_command is used
    sha = "0" * 40  # EVALSHA of the commit script, as redis-py's Script sends it

    def pack(commit: Commit, min_score: int) -> Any:
        args = commit.args(1, keys.group, min_score)
        return packer.pack_command(
            "EVALSHA", sha, 3, keys.epoch, keys.input_stream, keys.dedup, *args
        )

    return pack


def transaction_packer(keys: Keys) -> Callable[[Commit, int], Any]:
    def pack(commit: Commit, _min_score: int) -> Any:  # the two round trips' bytes
        return b"".join(checks_of(commit, keys)), b"".join(commands_of(commit, keys.dedup))

    return pack


def one_run(
    keys: Keys, batches: list[list[Entry]], limits: Limits, pack: Callable[[Commit, int], Any]
) -> dict[str, float]:
    spent = {"check": 0.0, "rules": 0.0, "commit": 0.0, "pack": 0.0}
    states: dict[str, SessionState] = {}
    spans: dict[str, list[Span]] = {}
    names = CounterNames()
    for entries in batches:
        t0 = time.process_time()
        checked = Checked(keys, entries, 300)
        t1 = time.process_time()
        now_ms = int(time.time() * 1000)
        history = {u: spans.get(u, []) for u in needs_history(checked.accepted, states, limits)}
        outcome = tag(checked.accepted, states, history, names, limits, now_ms)
        outcome.acked += [r.entry_id for r in checked.rejected]
        t2 = time.process_time()
        dead = [r.stream_fields() for r in checked.rejected]
        commit = build_commit(keys, outcome, names, now_ms, dead, entries[0][0])
        t3 = time.process_time()
        pack(commit, now_ms - 3_600_000)
        t4 = time.process_time()
        names.added.clear()  # as after a commit that applied
        for user, state in outcome.states.items():
            if state is None:
                states.pop(user, None)
            else:
                states[user] = state
        for o in outcome.opened:
            spans.setdefault(o.user_id, []).insert(0, Span(o.sid, o.start_ms, -1, -1, 0))
        t5 = time.process_time()
        spent["check"] += t1 - t0
        spent["rules"] += t2 - t1 + t5 - t4
        spent["commit"] += t3 - t2
        spent["pack"] += t4 - t3
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--script", action="store_true", help="pack for the commit script")
    args = parser.parse_args()
    settings = Settings()
    keys = Keys.from_settings(settings)
    limits = Limits(settings.session_timeout_s * 1000, settings.max_session_s * 1000)
    batches = entries_of(backlog(args.events, args.users), args.batch)
    pack = (script_packer if args.script else transaction_packer)(keys)
    best = best_of(args.repeat, lambda: one_run(keys, batches, limits, pack))
    line: dict[str, Any] = {"events": args.events, "batch": args.batch, "script": args.script}
    line["us_per_event"] = {k: round(v / args.events * 1e6, 2) for k, v in best.items()}
    line["us_per_event_total"] = round(sum(best.values()) / args.events * 1e6, 2)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
