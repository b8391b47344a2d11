"""`tagger compact`: merge a partition's part files into one, atomically for readers."""

import ctypes
import os
import shutil
from pathlib import Path
from typing import Any

from redis import Redis

from exporters.parquet import PART_NAME, write_atomically
from exporters.paths import fsync_dir, inside
from exporters.runner import sinks_paused
from tagger.errors import TaggerError
from tagger.keys import Keys

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


class CompactError(TaggerError):
    """Compaction could not start or finish."""


def swap_dirs(a: Path, b: Path) -> None:
    """Exchange two directories in one step (renameat2 RENAME_EXCHANGE), so a reader sees
    either the old files or the new ones, never a mix."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def compact_partition(partition: Path) -> tuple[int, int, int]:
    """Merge the part files of one directory (into one file per stream partition, whose
    ids it names); returns (files before, files after, rows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    by_suffix: dict[str, list[Path]] = {}
    for path in sorted(partition.iterdir()):
        if match := PART_NAME.match(path.name):
            by_suffix.setdefault(match[5] or "", []).append(path)
    files = sum(len(parts) for parts in by_suffix.values())
    staging = partition.with_name(f".compact-{partition.name}")  # hidden from readers
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted run
    if files <= len(by_suffix):
        return files, files, 0
    staging.mkdir(mode=0o700)
    rows = 0
    for suffix, parts in by_suffix.items():
        table = pa.concat_tables([pq.read_table(p) for p in parts])
        keys = [tuple(map(int, s.split("-"))) for s in table["stream_id"].to_pylist()]
        table = table.take(pa.array(sorted(range(len(keys)), key=keys.__getitem__)))
        if table.num_rows:
            first, last = table["stream_id"][0].as_py(), table["stream_id"][-1].as_py()
            name = f"part-{first}-{last}{suffix}.parquet"
        else:  # emptied by `tagger erase`: the newest name still marks the sink's progress
            name = max(parts, key=_last_id).name
        write_atomically(staging / name, table)
        rows += table.num_rows
    swap_dirs(staging, partition)
    fsync_dir(partition.parent)
    shutil.rmtree(staging)  # now holds the old parts
    return files, len(by_suffix), rows


def _last_id(part: Path) -> tuple[int, int]:
    match = PART_NAME.match(part.name)
    assert match is not None
    return int(match[3]), int(match[4])


def compact(
    client: Redis, keys: list[Keys], data_dir: Path, date: str | None
) -> list[dict[str, Any]]:
    """Pause the Parquet sink, merge each partition (or one date's), resume the sink."""
    root = inside(data_dir, Path("parquet"))
    if date:
        partitions = [root / "events" / f"date={date}"]
    else:
        partitions = [*sorted((root / "events").glob("date=*")), root / "sessions"]
    partitions = [p for p in partitions if p.is_dir()]
    if not partitions:
        raise CompactError(f"nothing to compact under {root}" + (f" for {date}" if date else ""))
    with sinks_paused(client, keys, ["parquet"], "compact"):
        report = []
        for partition in partitions:
            before, after, rows = compact_partition(partition)
            report.append(
                {
                    "partition": str(partition.relative_to(root)),
                    "files_before": before,
                    "files_after": after,
                    "rows": rows,
                }
            )
        return report
