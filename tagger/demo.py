"""A realistic synthetic A3CP workload: several users, bursts of events, long pauses."""

import random
import uuid
from typing import Any

import orjson

from tagger.times import epoch_ms, iso_ms, parse_time

USERS = ("elias01", "mira02", "jonas03", "aylin04", "noah05", "lena06", "omar07", "sofia08")
INTENTS = ("hungry", "go_outside", "help", "tired", "music", "drink", "toilet")
MODALITIES = ("gesture", "gesture", "speech", "audio", "image", "multimodal")


def user_timeline(
    rng: random.Random, user_id: str, start_ms: int, n_events: int, timeout_s: int
) -> list[dict[str, Any]]:
    """One user's events in time order: bursts of activity separated by pauses."""
    events: list[dict[str, Any]] = []
    ts = start_ms
    while len(events) < n_events:
        for _ in range(rng.randint(5, 40)):
            ts += rng.randint(200, 3000)
            events.append(_event(rng, user_id, ts))
        # Most pauses stay inside the session; about one in four outlasts the timeout.
        long_pause = rng.random() < 0.25
        pause_s = rng.randint(timeout_s + 1, timeout_s * 4) if long_pause else rng.randint(5, 120)
        ts += pause_s * 1000
    return events[:n_events]


def _event(rng: random.Random, user_id: str, ts_ms: int) -> dict[str, Any]:
    modality = rng.choice(MODALITIES)
    intent = rng.choice(INTENTS)
    event: dict[str, Any] = {
        "schema_version": "1.0.1",
        "record_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "user_id": user_id,
        "timestamp": iso_ms(ts_ms),
        "modality": modality,
        "source": f"{modality}_classifier",
        "performer_id": "system",
        "capture_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "context": {
            "location": rng.choice(("kitchen", "living_room", "garden")),
            "prompt_type": "natural_use",
        },
    }
    top = round(rng.uniform(0.4, 0.9), 2)
    event["classifier_output"] = {intent: top, "unknown": round(1 - top, 2)}
    if modality == "gesture":
        event["raw_features_ref"] = {
            "uri": f"/data/{user_id}/gesture_{ts_ms}.npz",
            "hash": "sha256:" + rng.randbytes(32).hex(),
            "encoding": "holistic_landmarks_v1;fps=15",
            "shape": [42, 128],
            "dtype": "float32",
            "format": "npz",
        }
    return event


def bad_entries(rng: random.Random) -> list[bytes]:
    """Entries a careless publisher might send; each must become a dead letter."""
    good = _event(rng, USERS[0], 1_750_000_000_000)
    return [
        b'{"schema_version": "1.0.1", "record_id": ',  # truncated JSON
        orjson.dumps({**good, "record_id": str(uuid.uuid4()), "modality": "telepathy"}),
        orjson.dumps({**good, "record_id": str(uuid.uuid4()), "frame_data": "iVBORw0KGgo="}),
        orjson.dumps({k: v for k, v in good.items() if k != "timestamp"}),
        orjson.dumps({**good, "record_id": "not-a-uuid"}),
    ]


def workload(
    seed: int, n_users: int, events_per_user: int, timeout_s: int, end_ms: int
) -> tuple[list[bytes], list[str]]:
    """Interleaved events of all users (each user's in time order, the last at end_ms),
    a few duplicates and bad entries; returns (payloads, user_ids). The same seed gives
    the same workload, ids included."""
    rng = random.Random(seed)
    tag = f"{rng.getrandbits(16):04x}"  # users of one seed never meet another seed's
    users = [f"{USERS[i % len(USERS)]}-{tag}{i // len(USERS) or ''}" for i in range(n_users)]
    timelines = [user_timeline(rng, u, 0, events_per_user, timeout_s) for u in users]
    merged = sorted((e for t in timelines for e in t), key=lambda e: e["timestamp"])
    shift_ms = end_ms - _text_ms(merged[-1]["timestamp"])  # generated from 0, moved to end now
    for e in merged:
        e["timestamp"] = iso_ms(_text_ms(e["timestamp"]) + shift_ms)
    payloads = [orjson.dumps(e) for e in merged]
    for _ in range(max(1, len(payloads) // 500)):  # re-sends from a flaky publisher
        original = rng.randrange(len(payloads))
        payloads.insert(rng.randint(original + 1, len(payloads)), payloads[original])
    for bad in bad_entries(rng):
        payloads.insert(rng.randrange(len(payloads)), bad)
    return payloads, users


def _text_ms(stamp: str) -> int:
    moment = parse_time(stamp)
    assert moment is not None
    return epoch_ms(moment)
