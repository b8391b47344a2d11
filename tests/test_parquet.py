"""The Parquet dataset and the session index, read back with pyarrow."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
from redis import Redis

from tagger.settings import Settings
from tests.conftest import SettingsFactory, event, output, publish, run_burst, streams

T0 = 1_750_000_000_000
MINUTE_MS = 60_000


def events_table(settings: Settings) -> pa.Table:
    root = settings.data_dir / "parquet" / "events"
    return ds.dataset(root, format="parquet", partitioning="hive").to_table()


def check_each_output_entry_once(client: Redis, settings: Settings) -> None:
    """Every output entry is a row exactly once, and no temp file is left visible."""
    table = events_table(settings)
    stream_ids = table.column("stream_id").to_pylist()
    assert len(stream_ids) == len(set(stream_ids))
    assert sorted(stream_ids) == sorted(
        i.decode() for i, _ in client.xrange(streams(settings).output_stream)
    )
    root = settings.data_dir / "parquet"
    assert not [p for p in root.rglob("*.tmp") if not p.name.startswith(".")]


def test_rows_have_typed_spine_and_keep_the_rest(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    first = event(
        "elias01",
        T0,
        classifier_output={"hungry": 0.7, "unknown": 0.3},
        capture_id="11111111-2222-3333-4444-555555555555",
        context={"location": "kitchen"},
        frame_index=7,
    )
    publish(
        client,
        settings,
        [first, event("elias01", T0 + MINUTE_MS), event("elias01", T0 + 60 * MINUTE_MS)],
    )
    run_burst(settings)

    table = events_table(settings)
    check_each_output_entry_once(client, settings)
    assert table.schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert table.schema.field("classifier_output").type == pa.map_(pa.string(), pa.float64())
    rows = {r["record_id"]: r for r in table.to_pylist()}
    row = rows[first["record_id"]]
    assert row["kind"] == "message" and row["session_seq"] == 1
    assert row["timestamp"] == datetime.fromtimestamp(T0 / 1000, UTC)
    assert dict(row["classifier_output"]) == {"hungry": 0.7, "unknown": 0.3}
    assert row["capture_id"] == first["capture_id"]
    assert row["date"] == "2025-06-15"
    assert orjson.loads(row["extra"]) == {"context": {"location": "kitchen"}, "frame_index": 7}
    kinds = sorted(r["kind"] for r in rows.values())
    assert kinds == ["message"] * 3 + ["session.end"] + ["session.start"] * 2


def test_session_index_has_one_row_per_closed_session(
    client: Redis, make_settings: SettingsFactory
) -> None:
    settings = make_settings(session_timeout_s=300)
    publish(client, settings, [event("mira02", T0 + m * MINUTE_MS) for m in (0, 2, 4, 30)])
    run_burst(settings)
    sessions = ds.dataset(settings.data_dir / "parquet" / "sessions").to_table().to_pylist()
    (closed,) = sessions
    ends = [e for e in output(client, settings) if e.get("kind") == "session.end"]
    assert closed["session_id"] == ends[0]["session_id"]
    assert closed["event_count"] == 3 and closed["close_reason"] == "timeout"
    assert closed["duration_s"] == 240.0
    assert closed["is_training_data"] is False


def test_compact_merges_parts_without_changing_rows(
    client: Redis, make_settings: SettingsFactory
) -> None:
    import subprocess

    from tests.conftest import tagger_cmd, tagger_env

    settings = make_settings(session_timeout_s=300)
    for batch in range(3):  # three runs, three part files per partition
        publish(
            client, settings, [event("lena06", T0 + (batch * 10 + i) * MINUTE_MS) for i in range(3)]
        )
        run_burst(settings)
    root = settings.data_dir / "parquet" / "events" / "date=2025-06-15"
    assert len(list(root.glob("part-*.parquet"))) == 3
    before = sorted(events_table(settings).to_pylist(), key=lambda r: r["stream_id"])
    with subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings)) as worker:
        done = subprocess.run(
            tagger_cmd("compact"),
            env=tagger_env(settings),
            capture_output=True,
            text=True,
            timeout=120,
        )
        worker.terminate()
    assert done.returncode == 0, done.stderr
    assert len(list(root.glob("part-*.parquet"))) == 1
    after = sorted(events_table(settings).to_pylist(), key=lambda r: r["stream_id"])
    assert after == before
    assert not list(root.parent.glob(".compact-*"))
    check_each_output_entry_once(client, settings)


def test_dataset_reads_in_pandas_polars_and_duckdb(
    client: Redis, make_settings: SettingsFactory
) -> None:
    import duckdb
    import pandas as pd
    import polars as pl

    settings = make_settings(session_timeout_s=300)
    publish(client, settings, [event("omar07", T0 + m * MINUTE_MS) for m in (0, 1, 30)])
    run_burst(settings)
    root = settings.data_dir / "parquet" / "events"
    rows = events_table(settings).num_rows
    assert len(pd.read_parquet(root)) == rows
    assert pl.scan_parquet(f"{root}/**/*.parquet", hive_partitioning=True).collect().height == rows
    query = (
        "SELECT count(*), count(DISTINCT date) "
        f"FROM read_parquet('{root}/**/*.parquet', hive_partitioning=true)"
    )
    assert duckdb.sql(query).fetchall() == [(rows, 2)]
