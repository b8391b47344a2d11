"""ML datasets: filters, a split with no group on both sides, and an honest manifest."""

import hashlib
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
from redis import Redis

from exporters.dataset import build_dataset
from tests.conftest import SettingsFactory, event, publish, run_burst, streams, tagged

T0 = 1_750_000_000_000


def test_splits_training_filter_and_manifest(
    client: Redis, make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    now = int(time.time() * 1000)
    start = {
        "action": "start",
        "record_id": str(uuid.uuid4()),
        "user_id": "train01",
        "timestamp": datetime.now(UTC).isoformat(),
        "performer_id": "carer01",
        "is_training_data": True,
        "training_intent_label": "help",
    }
    client.xadd(streams(settings).control_stream, {"data": orjson.dumps(start)})
    run_burst(settings)
    users = [f"user{n:02d}" for n in range(12)]
    publish(client, settings, [event(u, T0 + i * 1000) for u in users for i in range(5)])
    publish(client, settings, [event("train01", now + i * 1000) for i in range(4)])
    run_burst(settings)
    messages = tagged(client, settings)

    manifest = build_dataset(
        settings.data_dir, tmp_path / "split", split_by="user", test_fraction=0.3, seed=3
    )
    train = pq.read_table(tmp_path / "split" / "train.parquet")
    test = pq.read_table(tmp_path / "split" / "test.parquet")
    assert set(train["user_id"].to_pylist()).isdisjoint(test["user_id"].to_pylist())
    assert train.num_rows + test.num_rows == len(messages)
    assert test.num_rows > 0 and train.num_rows > 0
    for name, meta in manifest["files"].items():
        data = (tmp_path / "split" / name).read_bytes()
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert meta["rows"] == pq.read_table(tmp_path / "split" / name).num_rows
    assert manifest["split"]["by"] == "user"

    again = build_dataset(
        settings.data_dir, tmp_path / "again", split_by="user", test_fraction=0.3, seed=3
    )
    assert again["files"]["test.parquet"]["rows"] == manifest["files"]["test.parquet"]["rows"]

    build_dataset(settings.data_dir, tmp_path / "training", training_only=True)
    training = pq.read_table(tmp_path / "training" / "all.parquet")
    assert set(training["user_id"].to_pylist()) == {"train01"}
    assert training.num_rows == 4
    assert set(training["training_intent_label"].to_pylist()) == {"help"}

    by_session = build_dataset(
        settings.data_dir, tmp_path / "sessions", split_by="session", test_fraction=0.5, seed=1
    )
    sides = [
        set(pq.read_table(tmp_path / "sessions" / f"{n}.parquet")["session_id"].to_pylist())
        for n in ("train", "test")
    ]
    assert sides[0].isdisjoint(sides[1])
    assert by_session["split"]["train_groups"] == len(sides[0])
