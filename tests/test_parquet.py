"""The Parquet dataset and the session index, read back with pyarrow."""

from datetime import UTC, datetime

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pytest
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


@pytest.mark.parametrize("acked_first_chunk", [False, True])
def test_a_crash_after_a_part_file_is_renamed_writes_no_row_twice(
    client: Redis, make_settings: SettingsFactory, acked_first_chunk: bool
) -> None:
    """Killed between the rename of its part files and the ack of their entries, the
    sink's next leader takes those entries over and skips the rows already on disk.

    Taken over whole, the entries rebuild part files of the same names (a name is the id
    range), which the rename replaces: that alone hides a sink that wrote them again.
    The kill can also land between two of SinkRunner._ack's XACKs of 1000 ids; then the
    next leader gets the rest only, ranges of other names: with `acked_first_chunk` the
    test acks the first 1000 as such a kill leaves them."""
    import subprocess

    from exporters.parquet import FAULT_AFTER_RENAME, FAULT_EXIT_CODE
    from tests.conftest import tagger_cmd, tagger_env

    settings = make_settings(session_timeout_s=300, sink_lease_ms=500)
    users = [f"user{u}" for u in range(4)]
    # Two event dates (and the boundaries' date, wall-clock time): a part file each.
    day_one = [event(u, T0 + i * MINUTE_MS) for i in range(500) for u in users]
    day_two = [event(u, T0 + (720 + i) * MINUTE_MS) for i in range(100) for u in users]
    events = day_one + day_two
    publish(client, settings, events)
    run_burst(settings, sinks=False)  # the sink then reads a backlog: one file per date
    env = tagger_env(settings)
    crashed = subprocess.run(
        tagger_cmd("run", "--burst", "--sinks-only"),
        env={**env, FAULT_AFTER_RENAME: "1"},
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == FAULT_EXIT_CODE, crashed.stderr.decode()[-2000:]
    root = settings.data_dir / "parquet" / "events"
    assert len(list(root.glob("*/part-*.parquet"))) >= 3  # renamed into place ...
    out = streams(settings).output_stream
    group = next(g["name"] for g in client.xinfo_groups(out) if g["name"].endswith(b"-parquet"))
    assert client.xpending(out, group)["pending"] == client.xlen(out)  # ... nothing acked
    if acked_first_chunk:
        client.xack(out, group, *[i for i, _ in client.xrange(out, count=1000)])

    done = subprocess.run(tagger_cmd("run", "--burst"), env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    check_each_output_entry_once(client, settings)
    rows = events_table(settings).to_pylist()
    messages = [r["record_id"] for r in rows if r["kind"] == "message"]
    assert sorted(messages) == sorted(e["record_id"] for e in events)  # each exactly once
