"""Stream growth: trimmed below what every group acked, never an unacked entry."""

import asyncio
import time
from typing import Any

from redis import Redis

from exporters.runner import create_group
from tagger.connect import async_client
from tagger.keys import Keys
from tagger.retention import trim_streams
from tagger.settings import Settings
from tests.conftest import SettingsFactory, event, publish, run_burst, streams, wait_for
from tests.test_lifecycle import running_workers

SINK_GROUPS = {"session-tagger-jsonl", "session-tagger-parquet"}
DAY_MS = 86_400_000


def trim(settings: Settings, retention_ms: int) -> dict[str, int]:
    async def go() -> dict[str, int]:
        assert settings.redis_url
        client: Any = async_client(settings.redis_url)
        try:
            keys = Keys.from_settings(settings)
            return await trim_streams(client, keys, SINK_GROUPS, retention_ms, _now_ms())
        finally:
            await client.aclose()

    return asyncio.run(go())


def _now_ms() -> int:
    return int(time.time() * 1000)


def ids(client: Redis, stream: str) -> list[bytes]:
    return [entry_id for entry_id, _ in client.xrange(stream)]


def test_input_keeps_every_entry_another_group_has_not_acked(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    stream = streams(settings).input_stream
    publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(50)])
    published = ids(client, stream)
    client.xgroup_create(stream, "other-module", id="0")
    read = client.xreadgroup("other-module", "c1", {stream: ">"}, count=20)
    client.xack(stream, "other-module", *[i for i, _ in read[0][1][:10]])
    run_burst(settings)  # the tagger and its sinks ack all 50

    trim(settings, retention_ms=DAY_MS)
    assert ids(client, stream) == published[10:]  # from other-module's oldest pending entry
    pending = client.xpending_range(stream, "other-module", min="-", max="+", count=100)
    assert {p["message_id"] for p in pending} <= set(ids(client, stream))

    rest = client.xreadgroup("other-module", "c1", {stream: ">"}, count=100)
    client.xack(stream, "other-module", *published[10:20], *[i for i, _ in rest[0][1]])
    trim(settings, retention_ms=DAY_MS)
    assert ids(client, stream) == published[-1:]  # the last delivered entry stays


def test_output_keeps_what_the_sinks_need_and_the_retention(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(30)])
    publish(client, settings, [b"not json"])
    run_burst(settings, sinks=False)
    output = ids(client, streams(settings).output_stream)

    async def sink_groups() -> None:
        assert settings.redis_url
        aclient: Any = async_client(settings.redis_url)
        for group in SINK_GROUPS:
            await create_group(aclient, streams(settings).output_stream, group)
        await aclient.aclose()

    asyncio.run(sink_groups())  # sinks that have stored nothing yet
    removed = trim(settings, retention_ms=0)
    assert ids(client, streams(settings).output_stream) == output  # all still needed by the sinks
    assert removed[streams(settings).dead_letter_stream] == 1  # past retention, nobody to wait for

    trim(settings, retention_ms=DAY_MS)
    run_burst(settings)  # the sinks store everything
    assert ids(client, streams(settings).output_stream) == output  # inside the retention: kept
    trim(settings, retention_ms=0)
    assert ids(client, streams(settings).output_stream) == output[-1:]


def test_a_running_worker_trims_the_input_by_itself(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(trim_interval_s=0.2)
    with running_workers(settings):
        publish(client, settings, [event(ts_ms=1_750_000_000_000 + i) for i in range(40)])
        wait_for(lambda: client.xlen(streams(settings).output_stream) == 41)  # a start and 40
        wait_for(lambda: client.xlen(streams(settings).input_stream) <= 1)
