"""What the overload run samples: the input's backlog and the sinks' groups (from the
server), the worker's and its sinks' RSS (/proc), and the worker's /ready and /metrics."""

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench.streams import GROUP, INPUT, OUTPUT


def input_backlog(client: Redis) -> tuple[int, int, int] | None:
    """(lag, pending, entries-read) of the tagger's group; None before it exists. Where
    Redis cannot give the lag (deleted entries in the way), the stream's length less the
    pending stands in: the input is trimmed only of what every group acked."""
    try:
        groups: Any = client.xinfo_groups(INPUT)
    except Exception:  # no stream yet
        return None
    for group in groups:
        if group["name"] == GROUP.encode():
            pending = int(group["pending"])
            lag = group.get("lag")
            if lag is None:
                lag = max(int(client.xlen(INPUT)) - pending, 0)
            return int(lag), pending, int(group.get("entries-read") or 0)
    return None


def own_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def sinks_rss_mb(pid: int) -> float | None:
    """The worker's children: `tagger run` runs its file sinks as one."""
    sizes = [mb for c in children(pid) if (mb := own_rss_mb(c)) is not None]
    return round(sum(sizes), 1) if sizes else None


def get(url: str, timeout: float = 10.0) -> tuple[int | str, bytes, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            status: int | str = reply.status
            body = reply.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except (OSError, TimeoutError) as exc:
        status, body = f"error: {exc}", b""
    return status, body, round((time.perf_counter() - started) * 1000, 1)


def ready(port: int) -> dict[str, Any]:
    status, body, ms = get(f"http://127.0.0.1:{port}/ready")
    failed: list[str] = []
    checks: list[str] = []
    if body:
        try:
            for check in orjson.loads(body)["checks"]:
                checks.append(f"{check['name']}: {check['detail']}")
                if not check["ok"]:
                    failed.append(f"{check['name']}: {check['detail']}")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            failed.append(body[:200].decode(errors="replace"))
    return {"status": status, "ms": ms, "failed": failed, "checks": checks}


def metrics(port: int) -> dict[str, Any]:
    status, body, ms = get(f"http://127.0.0.1:{port}/metrics")
    found: dict[str, Any] = {"status": status, "ms": ms}
    if status != 200:
        return found
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            if s.name == "tagger_consumer_lag" and s.labels.get("stream") == INPUT:
                found[f"input_{s.labels['state']}"] = int(s.value)
            elif s.name == "tagger_sink_lag":
                found[f"sink_lag_{s.labels['sink']}"] = int(s.value)
            elif s.name == "tagger_stream_length" and s.labels.get("stream") == INPUT:
                found["input_length"] = int(s.value)
            elif s.name in (
                "tagger_events_tagged_total",
                "tagger_duplicates_dropped_total",
                "tagger_batch_wait_seconds_sum",
                "tagger_batch_wait_seconds_count",
            ):
                found[s.name] = s.value
            elif s.name == "tagger_dead_letters_total":
                found["dead_letters"] = found.get("dead_letters", 0) + s.value
    return found


def sink_groups(client: Redis) -> dict[str, int]:
    """Lag + pending of each file sink's group on the output (read from the server: cheap
    enough to poll, unlike a scrape of /metrics)."""
    try:
        groups: Any = client.xinfo_groups(OUTPUT)
    except Exception:  # no output yet
        return {}
    prefix = f"{GROUP}-".encode()
    return {
        g["name"].removeprefix(prefix).decode(): int(g.get("lag") or 0) + int(g["pending"])
        for g in groups
        if g["name"].startswith(prefix)
    }


def sink_lag(m: dict[str, Any]) -> int | None:
    lags = [v for k, v in m.items() if k.startswith("sink_lag_")]
    return sum(lags) if lags else None
