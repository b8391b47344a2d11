"""Open-loop load and the latency it meets, shared by bench.latency and bench.app.

The producer publishes one event every 1/rate s on a fixed schedule, whatever the tagger
does (a slow tagger meets a queue, not a politer producer); a reader in a process of its
own notes when each event's tagged entry arrives; latency is the arrival minus when the
event was due, both on the machine's monotonic clock. The first WARM_UP_S are not counted.
"""

import multiprocessing
import multiprocessing.context
import multiprocessing.synchronize
import statistics
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from bench.streams import INPUT, OUTPUT
from tagger.connect import sync_client
from tagger.times import iso_ms

WARM_UP_S = 1.0

# (monotonic clock s, stream id's ms) of each record_id: when it was due and its input
# entry, or when it arrived and its output entry.
Times = dict[str, tuple[float, int]]
MpContext = multiprocessing.context.DefaultContext | multiprocessing.context.SpawnContext


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(int(q * len(sorted_values)), len(sorted_values) - 1)]


def follow_output(url: str, stop: "multiprocessing.synchronize.Event", out: Any) -> None:
    """In its own process (no GIL shared with the producer): note when each record_id
    arrives on the output stream, and send the notes back when told to stop."""
    client = sync_client(url)
    arrived: Times = {}
    last = "0-0"
    while not stop.is_set():
        reply: Any = client.xread({OUTPUT: last}, count=1000, block=100)
        now = time.perf_counter()  # CLOCK_MONOTONIC: the same clock in every process
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last = entry_id
                if fields.get(b"kind") == b"message":
                    stream_ms = int(entry_id.split(b"-")[0])
                    arrived[orjson.loads(fields[b"data"])["record_id"]] = (now, stream_ms)
    out.send(arrived)


class TaggedReader:
    """follow_output in a process of its own: start it, then ask what arrived."""

    def __init__(self, url: str, mp: MpContext) -> None:
        self._stop = mp.Event()
        self._receive, send = mp.Pipe(duplex=False)
        self._process = mp.Process(target=follow_output, args=(url, self._stop, send))

    def start(self) -> None:
        self._process.start()

    def arrived(self) -> Times:
        """What arrived until now; the reader stops."""
        self._stop.set()
        arrived: Times = self._receive.recv()
        return arrived

    def close(self) -> None:
        self._stop.set()
        if self._process.pid is not None:  # started
            self._process.join(timeout=10)


def event_payload(record_id: str, n: int, users: int) -> bytes:
    return orjson.dumps(
        {
            "schema_version": "1.0.1",
            "record_id": record_id,
            "user_id": f"lat{n % users:04d}",
            "timestamp": iso_ms(int(time.time() * 1000)),
            "modality": "gesture",
            "source": "gesture_classifier",
            "classifier_output": {"drink": 0.8, "unknown": 0.2},
        }
    )


@dataclass
class Offered:
    sent: Times  # the events after the warm-up: when each was due, its input entry's ms
    events: int
    seconds: float  # from the first event to the last sent

    @property
    def achieved_rate(self) -> int:
        return round(self.events / self.seconds)


def offer(client: Redis, rate: int, seconds: float, users: int) -> Offered:
    """Publish rate x seconds events of `users` users to the input, open loop."""
    sent: Times = {}
    n_events = int(rate * seconds)
    started = time.perf_counter()
    n = 0
    while n < n_events:
        # Every event due by now goes out in one pipeline: with fsync on every write a
        # lone XADD waits for the disk, and an open-loop producer must not slow down.
        now = time.perf_counter()
        due = min(int((now - started) * rate) + 1, n_events)
        pipe = client.pipeline(transaction=False)
        batch = [str(uuid.uuid4()) for _ in range(n, due)]
        for k, record_id in enumerate(batch, start=n):
            pipe.xadd(INPUT, {"data": event_payload(record_id, k, users)})
        for k, (record_id, entry_id) in enumerate(zip(batch, pipe.execute(), strict=True), start=n):
            scheduled = started + k / rate
            if scheduled - started >= WARM_UP_S:
                # From when it was due (client clock), and from the input entry's id
                # to the output entry's id (server clock, whole ms).
                sent[record_id] = (scheduled, int(entry_id.split(b"-")[0]))
        n = due
        time.sleep(max(started + n / rate - time.perf_counter(), 0))
    return Offered(sent, n_events, time.perf_counter() - started)


def wait_drained(client: Redis) -> None:
    """Until the input's first group has nothing pending and nothing undelivered."""
    while drained := client.xinfo_groups(INPUT)[0]:
        if drained["pending"] == 0 and drained["lag"] == 0:
            break
        time.sleep(0.05)


def latencies_ms(sent: Times, arrived: Times) -> tuple[list[float], list[float]]:
    """Of the sent events that arrived, sorted: from when each was due to its arrival
    (monotonic clock), and from its input entry's id to its output entry's (server clock,
    whole ms)."""
    measured = [r for r in sent if r in arrived]
    latencies = sorted((arrived[r][0] - sent[r][0]) * 1000 for r in measured)
    in_server = sorted(float(arrived[r][1] - sent[r][1]) for r in measured)
    return latencies, in_server


def percentiles_ms(latencies: list[float]) -> dict[str, float]:
    """p50, p99, p99.9, max and mean of sorted latencies in ms, to 0.01 ms."""
    return {
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "p99_9_ms": round(percentile(latencies, 0.999), 2),
        "max_ms": round(latencies[-1], 2),
        "mean_ms": round(statistics.fmean(latencies), 2),
    }


def mean_batch_size(metrics_port: int) -> float | None:
    """The worker's mean batch so far, from its /metrics; None before its first batch."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    values = {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in ("tagger_batch_size_sum", "tagger_batch_size_count")
    }
    count = values.get("tagger_batch_size_count", 0)
    return round(values["tagger_batch_size_sum"] / count, 1) if count else None
