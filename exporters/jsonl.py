"""Append-only per-session JSONL audit log, one line per tagged event."""

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from exporters.paths import UnsafePath, fsync_dir, make_dirs, open_private, session_log_path
from tagger.times import now_iso_ms

log = logging.getLogger("tagger.sink.jsonl")
Entry = tuple[bytes, dict[bytes, bytes]]


class JsonlSink:
    """Writes each entry as `{"recorded_at": ..., "event": ...}` to its session's file."""

    name = "jsonl"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def add(self, entries: Sequence[Entry], recovering: bool) -> list[bytes]:
        """Append and fsync; returns the entry ids now on disk (safe to ack).

        After a crash (`recovering`), lines whose record_id the file already holds are
        skipped, so a redelivered batch is written exactly once."""
        recorded_at = now_iso_ms().encode()
        by_path: dict[Path, list[tuple[str, bytes]]] = {}
        done: list[bytes] = []
        for entry_id, fields in entries:
            done.append(entry_id)
            try:
                path = session_log_path(
                    self.data_dir, fields[b"user_id"].decode(), fields[b"session_id"].decode()
                )
            except (UnsafePath, KeyError, UnicodeDecodeError) as exc:
                log.error("entry %s not logged: %s", entry_id.decode(), exc)
                continue
            event = orjson.loads(fields[b"data"])
            # Re-encoding makes the line compact: no embedded newline can survive it.
            line = b'{"recorded_at":"%s","event":%s}\n' % (recorded_at, orjson.dumps(event))
            by_path.setdefault(path, []).append((str(event.get("record_id")), line))
        for path, lines in by_path.items():
            if recovering:
                present = record_ids_in(path)
                lines = [(rid, line) for rid, line in lines if rid not in present]
            append_durably(path, b"".join(line for _, line in lines))
        return done

    def flush(self) -> list[bytes]:
        """Nothing is buffered: every add is already durable."""
        return []


def append_durably(path: Path, data: bytes) -> None:
    """Append to path (repairing a torn last line first) and fsync it."""
    new_file = not path.exists()
    if new_file:
        make_dirs(path)
    fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        repair_torn_tail(fd)
        if data:
            os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new_file:
        fsync_dir(path.parent)


def repair_torn_tail(fd: int) -> None:
    """Cut a last line that a crash left without its newline."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    end = size
    while end > 0:
        start = max(0, end - 65536)
        block = os.pread(fd, end - start, start)
        cut = block.rfind(b"\n")
        if cut >= 0:
            os.ftruncate(fd, start + cut + 1)
            return
        end = start
    os.ftruncate(fd, 0)


def record_ids_in(path: Path) -> set[str]:
    """record_ids of the complete lines of a session log."""
    if not path.exists():
        return set()
    ids = set()
    with path.open("rb") as lines:
        for line in lines:
            if line.endswith(b"\n"):
                ids.add(str(orjson.loads(line)["event"].get("record_id")))
    return ids
