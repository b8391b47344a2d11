"""Behaviour against a real server: tagged output, dead letters, duplicates, formats."""

import asyncio
import re
from typing import Any

import orjson
from faststream.redis import StreamSub
from faststream.redis.parser.binary import BinaryMessageFormatV1
from redis import Redis

from tagger.connect import make_broker
from tagger.publish import publish_event
from tagger.worker import Worker
from tests.conftest import SettingsFactory, event, publish, run_burst, streams, tagged
from tests.test_intake import BAD

MINUTE_MS = 60_000


def test_every_field_is_preserved_and_session_id_added(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    original = event(
        capture_id="11111111-2222-3333-4444-555555555555",
        classifier_output={"go_outside": 0.84, "hungry": 0.12, "unknown": 0.04},
        context={"location": "kitchen", "partner_speech": "Möchtest du raus? ✓"},
        raw_features_ref={
            "uri": "/data/u01/g.npz",
            "hash": "sha256:" + "0" * 64,
            "encoding": "holistic_landmarks_v1",
            "shape": [42, 128],
            "dtype": "float32",
            "format": "npz",
        },
        is_demo=True,
        frame_index=None,
    )
    publish(client, settings, [original])
    counts = run_burst(settings)
    (out,) = tagged(client, settings)
    assert re.fullmatch(r"sess_[0-9a-f]{16}", out.pop("session_id"))
    assert out.pop("session_seq") == 1
    assert out == original
    assert (counts.tagged, counts.opened, counts.dead) == (1, 1, 0)


def test_sessions_roll_on_timeout_and_max_duration(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300, max_session_s=3600)
    t0 = 1_750_000_000_000
    # 0-9: one session; 15 follows a 6-minute gap; 30 follows a 15-minute gap and starts a
    # session kept alive every 4 minutes until it has lasted the maximum hour at 90.
    offsets_min = [0, 4, 9, 15, *range(30, 90, 4), 90]
    events = [event("mira02", t0 + m * MINUTE_MS) for m in offsets_min]
    publish(client, settings, events)
    run_burst(settings)
    sessions = [e["session_id"] for e in tagged(client, settings)]
    groups = [sessions[0:3], sessions[3:4], sessions[4:-1], sessions[-1:]]
    assert [len(set(g)) for g in groups] == [1, 1, 1, 1]
    assert len(set(sessions)) == 4


def test_users_never_share_a_session(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    publish(client, settings, [event("elias01"), event("mira02"), event("elias01")])
    run_burst(settings)
    by_user: dict[str, set[str]] = {}
    for e in tagged(client, settings):
        by_user.setdefault(e["user_id"], set()).add(e["session_id"])
    assert len(by_user["elias01"]) == len(by_user["mira02"]) == 1
    assert by_user["elias01"] != by_user["mira02"]


def test_each_bad_entry_is_dead_lettered_and_does_not_block_the_batch(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    good = [event(), event()]
    bad = [v if isinstance(v, bytes) else orjson.dumps(v) for v in BAD.values()]
    publish(client, settings, [good[0], *bad, good[1]])
    input_ids = [i for i, _ in client.xrange(streams(settings).input_stream)]

    counts = run_burst(settings)

    assert [e["record_id"] for e in tagged(client, settings)] == [g["record_id"] for g in good]
    dead = client.xrange(streams(settings).dead_letter_stream)
    assert [f[b"reason"].decode() for _, f in dead] == list(BAD)
    assert [f[b"source_id"] for _, f in dead] == input_ids[1:-1]
    for (_, fields), original in zip(dead, bad, strict=True):
        assert fields[b"detail"].decode().endswith(".")
        if fields[b"reason"] == b"raw_media":
            assert b"data" not in fields and len(fields[b"data_sha256"]) == 64
        else:
            assert fields[b"data"] == original
    assert counts.dead == len(BAD)
    assert client.xpending(streams(settings).input_stream, settings.group)["pending"] == 0


def test_duplicates_are_not_republished(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    first = event()
    publish(client, settings, [first, event(), first])
    assert run_burst(settings).duplicates == 1
    publish(client, settings, [first])  # again, in a later run
    assert run_burst(settings).duplicates == 1
    records = [e["record_id"] for e in tagged(client, settings)]
    assert len(records) == len(set(records)) == 2


def test_upstream_session_id_is_kept_aside(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    publish(client, settings, [event(session_id="sess_00000000000000aa")])
    run_burst(settings)
    (out,) = tagged(client, settings)
    assert out["upstream_session_id"] == "sess_00000000000000aa"
    assert out["session_id"] != "sess_00000000000000aa"


def test_replay_gives_the_same_session_ids(client: Redis, make_settings: SettingsFactory) -> None:
    events = [event("noah05", 1_750_000_000_000 + m * MINUTE_MS) for m in (0, 2, 20, 21)]
    runs = []
    for _ in range(2):
        settings = make_settings()
        publish(client, settings, events)
        run_burst(settings)
        runs.append([e["session_id"] for e in tagged(client, settings)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 2


def test_faststream_publisher_input_and_subscriber_output(
    server_url: str, client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings()
    sent = event(context={"location": "garden"})
    received: list[dict[str, Any]] = []

    async def roundtrip() -> None:
        broker = make_broker(server_url)

        # The documented way to read the tagged stream with FastStream.
        @broker.subscriber(stream=StreamSub(streams(settings).output_stream, last_id="0"))
        async def on_tagged(body: dict[str, Any]) -> None:
            if body.get("kind", "message") == "message":  # boundaries carry their kind
                received.append(body)

        async with broker:
            await broker.start()
            await broker.publish(sent, stream=streams(settings).input_stream)
            await Worker(settings, server_url, burst=True).run()
            for _ in range(100):
                if received:
                    break
                await asyncio.sleep(0.05)

    raw = None
    asyncio.run(roundtrip())
    for _id, fields in client.xrange(streams(settings).input_stream):
        raw = fields
    assert raw is not None and b"__data__" in raw  # really the FastStream wire format
    assert BinaryMessageFormatV1.parse(raw[b"__data__"])[0]
    (body,) = received
    assert body["record_id"] == sent["record_id"]
    assert body["context"] == {"location": "garden"}
    assert body["session_id"].startswith("sess_")


def test_publish_event_helper(client: Redis, make_settings: SettingsFactory) -> None:
    settings = make_settings()
    publish_event(client, streams(settings).input_stream, event())
    assert run_burst(settings).tagged == 1
