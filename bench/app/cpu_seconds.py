"""CPU seconds of process trees and of the machine, from /proc: what bench.app's part 2
notes for each run."""

import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu() -> tuple[dict[int, list[int]], dict[int, float]]:
    """Every process's children and CPU seconds (user + system), from /proc."""
    children: dict[int, list[int]] = {}
    seconds: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return children, seconds


def cpu_snapshot(roots: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds so far of each named process with its descendants, of this benchmark's
    whole tree ("ours"), and of the machine ("machine": every core's busy time)."""
    children, seconds = process_cpu()

    def tree(pid: int | None) -> float:
        total, todo = 0.0, [pid] if pid else []
        while todo:
            p = todo.pop()
            total += seconds.get(p, 0.0)
            todo.extend(children.get(p, []))
        return total

    with open("/proc/stat") as stat:
        ticks = [int(x) for x in stat.readline().split()[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
    return {name: tree(pid) for name, pid in roots.items()} | {
        "ours": tree(os.getpid()),
        "machine": busy / TICKS,
    }


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    used = {k: after[k] - before[k] for k in after}
    named = sum(v for k, v in used.items() if k not in ("ours", "machine"))
    used["producer_and_reader"] = used["ours"] - named
    used["not_ours"] = used.pop("machine") - used.pop("ours")  # other work on the machine
    return {k: round(v, 1) for k, v in used.items()}
