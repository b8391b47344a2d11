"""The overload run's events, one run's record_ids sharing a prefix, and its producers: an
open-loop one at a rate that may change, and a backlog published at once."""

import multiprocessing
import multiprocessing.sharedctypes
import multiprocessing.synchronize
import time
import uuid

import orjson
from redis import Redis

from bench.streams import INPUT
from tagger.connect import sync_client
from tagger.times import iso_ms

MAX_PIPELINE = 5000  # a producer that fell behind catches up in pipelines of this many


def run_prefix() -> str:
    """The first 24 characters of a UUID4 ("xxxxxxxx-xxxx-4xxx-yxxx-"); an event's number
    in 12 hex digits completes it, still a valid UUID4."""
    return str(uuid.uuid4())[:24]


def payload(prefix: str, n: int, users: int, timestamp: str) -> bytes:
    return orjson.dumps(
        {
            "schema_version": "1.0.1",
            "record_id": f"{prefix}{n:012x}",
            "user_id": f"ovl{n % users:04d}",
            "timestamp": timestamp,
            "modality": "gesture",
            "source": "gesture_classifier",
            "classifier_output": {"drink": 0.8, "unknown": 0.2},
        }
    )


def produce(
    url: str,
    prefix: str,
    users: int,
    rate: "multiprocessing.sharedctypes.Synchronized[float]",
    published: "multiprocessing.sharedctypes.Synchronized[int]",
    behind_max: "multiprocessing.sharedctypes.Synchronized[int]",
    stop: "multiprocessing.synchronize.Event",
) -> None:
    """In its own process: publish at `rate` events/s (read anew each round; a change
    starts a new schedule from now) until told to stop."""
    client = sync_client(url)
    n, anchor_n, anchor_t, current = 0, 0, time.perf_counter(), rate.value
    while not stop.is_set():
        now = time.perf_counter()
        if rate.value != current:
            current, anchor_n, anchor_t = rate.value, n, now
        if current <= 0:
            time.sleep(0.05)
            continue
        due = anchor_n + int((now - anchor_t) * current) + 1
        behind_max.value = max(behind_max.value, due - n)
        upto = min(due, n + MAX_PIPELINE)
        timestamp = iso_ms(int(time.time() * 1000))
        pipe = client.pipeline(transaction=False)
        for k in range(n, upto):
            pipe.xadd(INPUT, {"data": payload(prefix, k, users, timestamp)})
        pipe.execute()
        n = upto
        published.value = n
        time.sleep(max(anchor_t + (n - anchor_n) / current - time.perf_counter(), 0))


def publish_backlog(client: Redis, prefix: str, count: int, users: int) -> None:
    timestamp = iso_ms(int(time.time() * 1000))
    for start in range(0, count, 1000):
        pipe = client.pipeline(transaction=False)
        for k in range(start, min(start + 1000, count)):
            pipe.xadd(INPUT, {"data": payload(prefix, k, users, timestamp)})
        pipe.execute()
