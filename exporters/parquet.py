"""Hive-partitioned Parquet of the tagged stream, plus an index of closed sessions."""

import os
import re
from collections.abc import Sequence
from pathlib import Path
from time import monotonic
from typing import Any

import orjson

from exporters.paths import fsync_dir, inside, make_dirs, open_private
from tagger.times import parse_time

Entry = tuple[bytes, dict[bytes, bytes]]
# part-<first stream id>-<last stream id>[-p<partition>].parquet: the ids are the sink's
# progress marker (per partition: each partition's output stream numbers its own ids).
PART_NAME = re.compile(r"^part-(\d+)-(\d+)-(\d+)-(\d+)(-p\d+)?\.parquet$")
# Test-only fault hook (tests/test_parquet.py): with this set to 1 the process dies right
# after a flush renamed its part files into place, before their entries are acked, as a
# crash there would. Not TAGGER_*: Settings refuses unknown TAGGER_* names. Never set it
# in production.
FAULT_AFTER_RENAME = "A3CP_TEST_FAULT_AFTER_PARQUET_RENAME"
FAULT_EXIT_CODE = 86
SPINE = (
    "record_id",
    "user_id",
    "session_id",
    "modality",
    "source",
    "performer_id",
    "schema_version",
    "capture_id",
)
SESSION_FIELDS = (
    "session_id",
    "user_id",
    "start_time",
    "end_time",
    "close_reason",
    "event_count",
    "first_event_time",
    "last_event_time",
    "is_training_data",
    "training_intent_label",
    "session_notes",
    "performer_id",
)


def event_schema() -> Any:
    import pyarrow as pa  # lazily: only the Parquet paths pay for importing pyarrow

    return pa.schema(
        [
            ("stream_id", pa.string()),
            ("kind", pa.string()),
            ("timestamp", pa.timestamp("ms", tz="UTC")),
            ("session_seq", pa.int64()),
            *[(name, pa.string()) for name in SPINE],
            ("classifier_output", pa.map_(pa.string(), pa.float64())),
            ("late", pa.bool_()),
            ("extra", pa.string()),
        ]
    )


def session_schema() -> Any:
    import pyarrow as pa

    times = {"start_time", "end_time", "first_event_time", "last_event_time"}
    fields = []
    for name in SESSION_FIELDS:
        if name in times:
            fields.append((name, pa.timestamp("ms", tz="UTC")))
        elif name == "event_count":
            fields.append((name, pa.int64()))
        elif name == "is_training_data":
            fields.append((name, pa.bool_()))
        else:
            fields.append((name, pa.string()))
    return pa.schema([*fields, ("duration_s", pa.float64()), ("stream_id", pa.string())])


def event_row(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One row from an output entry."""
    kind = fields.get(b"kind", b"message").decode()
    return row_of(entry_id.decode(), kind, orjson.loads(fields[b"data"]))


def row_of(stream_id: str, kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """One row: typed spine columns, everything else as JSON in `extra`."""
    event = dict(event)
    row: dict[str, Any] = {"stream_id": stream_id, "kind": kind}
    row["timestamp"] = parse_time(event.pop("timestamp", None))
    row["session_seq"] = event.pop("session_seq", None)
    for name in SPINE:
        value = event.pop(name, None)
        row[name] = None if value is None else str(value)
    scores = event.pop("classifier_output", None)
    row["classifier_output"] = list(scores.items()) if isinstance(scores, dict) else None
    row["late"] = bool(event.pop("late", False))
    event.pop("kind", None)
    row["extra"] = orjson.dumps(event).decode()
    return row


def session_row(entry_id: bytes, fields: dict[bytes, bytes]) -> dict[str, Any]:
    """One row of the session index, from a session.end event."""
    end = orjson.loads(fields[b"data"])
    row = {name: end.get(name) for name in SESSION_FIELDS}
    for name in ("start_time", "end_time", "first_event_time", "last_event_time"):
        row[name] = parse_time(row[name])
    row["duration_s"] = (
        (row["end_time"] - row["start_time"]).total_seconds()
        if row["end_time"] and row["start_time"]
        else None
    )
    row["stream_id"] = entry_id.decode()
    return row


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq)


class ParquetSink:
    """Buffers rows and writes a part file per date (and for the session index) when the
    buffer reaches `roll_rows`, is `roll_age_s` old, or the stream goes idle."""

    name = "parquet"

    def __init__(
        self,
        data_dir: Path,
        roll_rows: int = 50_000,
        roll_age_s: float = 60.0,
        label: str = "",
    ) -> None:
        self.root = inside(data_dir, Path("parquet"))
        self.suffix = f"-{label}" if label else ""  # which partition's stream the ids count
        self.roll_rows, self.roll_age_s = roll_rows, roll_age_s
        self._rows: dict[str, list[dict[str, Any]]] = {}  # partition dir -> rows
        self._ids: list[bytes] = []
        self._since = monotonic()

    def add(self, entries: Sequence[Entry], recovering: bool) -> list[bytes]:
        written = self._written_up_to() if recovering else {}
        if not self._ids:
            self._since = monotonic()
        for entry_id, fields in entries:
            self._ids.append(entry_id)
            row = event_row(entry_id, fields)
            parts = [(f"events/date={row['timestamp']:%Y-%m-%d}", row)]
            if row["kind"] == "session.end":
                parts.append(("sessions", session_row(entry_id, fields)))
            for part, part_row in parts:
                if _id_key(entry_id.decode()) > written.get(part, (-1, -1)):
                    self._rows.setdefault(part, []).append(part_row)
        if len(self._ids) >= self.roll_rows or monotonic() - self._since >= self.roll_age_s:
            return self.flush()
        return []

    def flush(self) -> list[bytes]:
        """Write every buffered partition as one new part file; returns the ids stored."""
        for part, rows in self._rows.items():
            self._write(part, rows)
        if self._rows and os.environ.get(FAULT_AFTER_RENAME) == "1":  # test-only hook
            os._exit(FAULT_EXIT_CODE)
        done, self._rows, self._ids = self._ids, {}, []
        return done

    def _write(self, part: str, rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        schema = session_schema() if part == "sessions" else event_schema()
        first, last = rows[0]["stream_id"], rows[-1]["stream_id"]
        final = self.root / part / f"part-{first}-{last}{self.suffix}.parquet"
        write_atomically(final, pa.Table.from_pylist(rows, schema=schema))

    def _written_up_to(self) -> dict[str, tuple[int, int]]:
        """Per partition, the last stream id already in a part file (from file names)."""
        latest: dict[str, tuple[int, int]] = {}
        for path in self.root.glob("**/part-*.parquet"):
            if (match := PART_NAME.match(path.name)) and (match[5] or "") == self.suffix:
                part = str(path.parent.relative_to(self.root))
                end = (int(match[3]), int(match[4]))
                latest[part] = max(latest.get(part, end), end)
        return latest


def write_atomically(final: Path, table: Any) -> None:
    """Write a Parquet file so that it appears whole or not at all: temp, fsync, rename."""
    import pyarrow.parquet as pq

    temp = final.with_name(f".{final.name}.tmp")  # a dot: hidden from dataset readers
    make_dirs(final)
    fd = open_private(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "wb") as out:
        pq.write_table(table, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, final)
    fsync_dir(final.parent)
