"""ML training sets from the Parquet dataset: filtered, split with no group on both sides."""

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson

from exporters.parquet import write_atomically
from tagger.errors import TaggerError

DATASET_FORMAT = "a3cp-dataset/1"
SplitBy = Literal["user", "session"]


class DatasetError(TaggerError):
    """No dataset could be built from what is on disk."""


def training_labels(events: Any) -> dict[str, str | None]:
    """session_id -> training_intent_label for sessions flagged is_training_data."""
    import pyarrow.compute as pc

    starts = events.filter(pc.equal(events["kind"], "session.start"))
    labels = {}
    for sid, extra in zip(
        starts["session_id"].to_pylist(), starts["extra"].to_pylist(), strict=True
    ):
        meta = orjson.loads(extra or "{}")
        if meta.get("is_training_data"):
            labels[sid] = meta.get("training_intent_label")
    return labels


def in_test(key: str, seed: int, test_fraction: float) -> bool:
    """A stable draw per group: the same key, seed and fraction always land the same side."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


def build_dataset(
    data_dir: Path,
    out: Path,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    training_only: bool = False,
    split_by: SplitBy | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> dict[str, Any]:
    """Write `all.parquet` (or `train.parquet` + `test.parquet`) and `manifest.json`."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    root = data_dir / "parquet" / "events"
    if not root.is_dir():
        raise DatasetError(f"no Parquet under {root}; run `tagger run` with its sinks first")
    events = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    labels = training_labels(events)
    rows = events.filter(pc.equal(events["kind"], "message"))
    if since is not None:
        rows = rows.filter(
            pc.greater_equal(rows["timestamp"], pa.scalar(since, rows["timestamp"].type))
        )
    if until is not None:
        rows = rows.filter(pc.less(rows["timestamp"], pa.scalar(until, rows["timestamp"].type)))
    if training_only:
        rows = rows.filter(pc.is_in(rows["session_id"], pa.array(list(labels), pa.string())))
    session_ids = rows["session_id"].to_pylist()
    rows = rows.append_column(
        "training_intent_label", pa.array([labels.get(s) for s in session_ids], pa.string())
    )
    rows = rows.sort_by([("timestamp", "ascending"), ("stream_id", "ascending")])

    parts: dict[str, Any] = {"all": rows}
    split: dict[str, Any] | None = None
    if split_by is not None:
        keys = rows["user_id" if split_by == "user" else "session_id"].to_pylist()
        mask = pa.array([in_test(k, seed, test_fraction) for k in keys], pa.bool_())
        parts = {"train": rows.filter(pc.invert(mask)), "test": rows.filter(mask)}
        groups = {name: set(t[split_by + "_id"].to_pylist()) for name, t in parts.items()}
        if groups["train"] & groups["test"]:  # cannot happen; checked because it matters
            raise DatasetError(f"a {split_by} landed on both sides of the split")
        split = {
            "by": split_by,
            "test_fraction": test_fraction,
            "seed": seed,
            **{f"{n}_groups": len(g) for n, g in groups.items()},
        }
    files = {}
    for name, table in parts.items():
        path = out / f"{name}.parquet"
        write_atomically(path, table)
        files[path.name] = {
            "rows": table.num_rows,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
    manifest = {
        "format": DATASET_FORMAT,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "filters": {
            "since": since and since.isoformat(),
            "until": until and until.isoformat(),
            "training_only": training_only,
        },
        "schema": rows.schema.to_string(show_schema_metadata=False),
        "split": split,
        "files": files,
    }
    (out / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return manifest
