"""Right to erasure, on disk: a user's JSONL logs and their rows in every Parquet file."""

import shutil
from pathlib import Path

from exporters.parquet import write_atomically
from exporters.paths import UnsafePath, fsync_dir, inside, user_log_dir


def erase_files(data_dir: Path, user_id: str) -> dict[str, int]:
    """Remove the user's log directory and rewrite each Parquet file that holds their rows
    (temp file + rename, so readers see the old file or the new one); returns counts."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    user_logs = user_log_dir(data_dir, user_id)
    report = {"log_files": 0, "parquet_rows": 0, "parquet_files_rewritten": 0}
    if user_logs.is_symlink():
        raise UnsafePath(f"{user_logs} is a symlink; remove it by hand after checking it")
    if user_logs.is_dir():
        report["log_files"] = sum(1 for p in user_logs.rglob("*") if p.is_file())
        shutil.rmtree(user_logs)
        fsync_dir(user_logs.parent)
    root = inside(data_dir, Path("parquet"))
    for part in sorted(root.glob("*/**/part-*.parquet")) if root.is_dir() else []:
        table = pq.read_table(part)
        theirs = pc.fill_null(pc.equal(table["user_id"], user_id), False)
        erased = pc.sum(theirs).as_py() or 0
        if not erased:
            continue
        # Even with no rows left the file stays: its name records the stream ids the
        # Parquet sink has written, which a restarted sink reads to skip them.
        write_atomically(part, table.filter(pc.invert(theirs)))
        report["parquet_rows"] += erased
        report["parquet_files_rewritten"] += 1
    return report
