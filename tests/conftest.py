"""Fixtures: a real server (embedded Valkey, or TAGGER_REDIS_URL) and per-test streams."""

import asyncio
import os
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis import Redis

from tagger.connect import sync_client
from tagger.keys import Keys
from tagger.publish import router
from tagger.rules import Counts
from tagger.server import EmbeddedValkey
from tagger.settings import Settings
from tagger.worker import Worker

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TAGGER_REDIS_URL when set; a local cluster (3 primaries, 3 replicas) when
    TESTS_ON_CLUSTER=1; else an embedded Valkey, for the whole test run."""
    if url := os.environ.get("TAGGER_REDIS_URL"):
        yield url
        return
    if os.environ.get("TESTS_ON_CLUSTER") == "1":
        from tests.cluster import LocalCluster

        cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
        yield cluster.start()
        cluster.stop()
        return
    server = EmbeddedValkey(tmp_path_factory.mktemp("valkey"), appendfsync="everysec")
    yield server.start()
    server.stop()


@pytest.fixture
def client(server_url: str) -> Iterator["Redis[bytes]"]:
    redis = sync_client(server_url)
    yield redis
    redis.close()


@pytest.fixture
def make_settings(server_url: str, tmp_path: Path) -> SettingsFactory:
    """Settings with stream, group and state names unique to this call."""

    def make(**overrides: Any) -> Settings:
        ns = f"test:{uuid.uuid4().hex[:12]}"
        values: dict[str, Any] = {
            "redis_url": server_url,
            "data_dir": tmp_path / "data",
            "input_stream": f"{ns}:in",
            "output_stream": f"{ns}:out",
            "dead_letter_stream": f"{ns}:dead",
            "control_stream": f"{ns}:control",
            "state_prefix": f"{ns}:state",
            "claim_idle_ms": 200,
            "metrics_port": 0,  # several workers at once must not fight over one port
            "trim_interval_s": 3600,  # tests read the input back; tests/test_retention trims
        }
        values.update(overrides)
        return Settings(**values)

    return make


def streams(settings: Settings) -> Keys:
    """Partition 0's names: the settings' own on one server, hash-tagged on a cluster."""
    return Keys.from_settings(settings)


def run_burst(settings: Settings, sinks: bool = True) -> Counts:
    """Run the real worker (FastStream app) until the input is drained (and written)."""
    assert settings.redis_url
    return asyncio.run(Worker(settings, settings.redis_url, burst=True, sinks=sinks).run())


def publish(client: "Redis[bytes]", settings: Settings, events: list[Any]) -> None:
    """XADD each event (dict as JSON, or raw bytes) to the input stream (its user's
    partition's, when there are several)."""
    route = router(settings)
    pipe = client.pipeline(transaction=False)
    for event in events:
        data = event if isinstance(event, bytes) else orjson.dumps(event)
        pipe.xadd(route(data), {"data": data})
    pipe.execute()


def output(client: "Redis[bytes]", settings: Settings) -> list[dict[str, Any]]:
    """Every output entry's event (messages and boundaries) in stream order (partition
    after partition), with the entry's own fields checked against it."""
    events = []
    entries = [e for k in Keys.every_partition(settings) for e in client.xrange(k.output_stream)]
    for _id, fields in entries:
        event = orjson.loads(fields[b"data"])
        assert fields[b"session_id"].decode() == event["session_id"]
        assert fields[b"user_id"].decode() == event["user_id"]
        kind = fields[b"kind"].decode()
        assert kind == event.get("kind", "message")
        events.append({**event, "kind": kind} if kind == "message" else event)
    return events


def tagged(client: "Redis[bytes]", settings: Settings) -> list[dict[str, Any]]:
    """The tagged messages of the output stream (boundary events left out)."""
    messages = []
    for e in output(client, settings):
        if e.pop("kind") == "message":
            messages.append(e)
    return messages


def event(user_id: str = "elias01", ts_ms: int = 1_750_000_000_000, **extra: Any) -> dict[str, Any]:
    """A valid A3CPMessage."""
    from tagger.times import iso_ms

    return {
        "schema_version": "1.0.1",
        "record_id": str(uuid.uuid4()),
        "user_id": user_id,
        "timestamp": iso_ms(ts_ms),
        "modality": "gesture",
        "source": "gesture_classifier",
        "performer_id": "system",
        **extra,
    }


def tagger_env(settings: Settings) -> dict[str, str]:
    """Environment that points a `tagger` subprocess at these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"TAGGER_{name.upper()}"] = str(value)
    return env


def tagger_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tagger", *args]


def wait_for(condition: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll until `condition()` is truthy (and return it); fail the test after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)
    return result


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
