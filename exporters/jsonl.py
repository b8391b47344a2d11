"""Append-only per-session JSONL audit log, one line per tagged event.

The file is shared. Upstream A3CP's schema_recorder appends to the same
`logs/users/<user_id>/sessions/<session_id>.jsonl`, one write() per line, O_APPEND, under
flock(LOCK_EX) held from open to close. The sink takes that same lock (flock: fcntl/lockf
locks do not see flock ones on Linux) around every repair and every append, writes each
batch of whole lines with one O_APPEND write, and so never sees a line another writer is
writing, never cuts one, and never writes into the middle of one. What a writer that died
mid-line left is handled by `repair_torn_tail`.
"""

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from exporters.paths import UnsafePath, fsync_dir, make_dirs, open_private, session_log_path
from tagger.times import now_iso_ms

log = logging.getLogger("tagger.sink.jsonl")
Entry = tuple[bytes, dict[bytes, bytes]]

# On each log, the byte range "<start> <end>" of the sink's last append, set under the
# lock before the write: after a crash it tells a torn tail of ours from another writer's.
APPEND_RECORD = "user.a3cp-tagger.append"


class JsonlSink:
    """Writes each entry as `{"recorded_at": ..., "event": ...}` to its session's file."""

    name = "jsonl"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def add(self, entries: Sequence[Entry], recovering: bool) -> list[bytes]:
        """Append and fsync; returns the entry ids now on disk (safe to ack).

        After a crash (`recovering`), lines whose event the file already holds, as this
        sink writes it, are skipped, so a redelivered batch is written exactly once. (Only
        the same event counts: another writer's line with the same record_id, such as
        upstream's recording of the untagged message, is not ours.)"""
        recorded_at = now_iso_ms().encode()
        by_path: dict[Path, list[tuple[bytes, bytes]]] = {}
        # A session's path once a batch: checking it resolves symlinks (stat calls), which
        # was a third of this sink's CPU when done for every entry (py-spy, bench.latency).
        paths: dict[tuple[bytes, bytes], Path] = {}
        done: list[bytes] = []
        for entry_id, fields in entries:
            done.append(entry_id)
            try:
                ids = (fields[b"user_id"], fields[b"session_id"])
                path = paths.get(ids)
                if path is None:
                    user_id, session_id = ids[0].decode(), ids[1].decode()
                    path = paths[ids] = session_log_path(self.data_dir, user_id, session_id)
            except (UnsafePath, KeyError, UnicodeDecodeError) as exc:
                log.error("entry %s not logged: %s", entry_id.decode(), exc)
                continue
            # Re-encoding makes the line compact: no embedded newline can survive it.
            event = orjson.dumps(orjson.loads(fields[b"data"]))
            line = b'{"recorded_at":"%s","event":%s}\n' % (recorded_at, event)
            by_path.setdefault(path, []).append((event, line))
        for path, lines in by_path.items():
            if recovering:
                present = events_in(path)
                lines = [(event, line) for event, line in lines if _key(event) not in present]
            append_durably(path, b"".join(line for _, line in lines))
        return done

    def flush(self) -> list[bytes]:
        """Nothing is buffered: every add is already durable."""
        return []


def append_durably(path: Path, data: bytes) -> None:
    """Append whole lines to path and fsync it: under flock(LOCK_EX), after mending a torn
    last line (`repair_torn_tail`), with one O_APPEND write.

    The lock is held for the repair and the write only (not the fsync). A failed write
    is undone before the lock is released (everything past its start is ours: no writer
    that takes the lock can have appended since), so it leaves no torn line behind; a
    crash between the lock and the end of the write leaves at most a torn line of ours,
    inside the range recorded on the file, which the next append cuts (the first is the
    new leader's recovery). Its entries were not acked, so they come again and are written
    once. (Until then a co-writer that appends without repairing, as upstream's recorder
    does, glues its line to that fragment: the one case left, a kill in the middle of a
    write() call.)"""
    new_file = not path.exists()
    if new_file:
        make_dirs(path)
    fd = open_private(path, os.O_RDWR | os.O_CREAT | os.O_APPEND)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            mended = repair_torn_tail(fd)
            if mended:
                log.warning("%s: %s", path, mended)
            if data:
                _write_whole(fd, data)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.fsync(fd)
    finally:
        os.close(fd)
    if new_file:
        fsync_dir(path.parent)


def _write_whole(fd: int, data: bytes) -> None:
    """One write of data at the end (more only if the kernel writes it short), with the
    range recorded first; on failure the file is cut back to where it ended."""
    start = os.lseek(fd, 0, os.SEEK_END)
    _record_append(fd, start, start + len(data))
    written = 0
    try:
        while written < len(data):
            written += os.write(fd, memoryview(data)[written:])
    except OSError:
        with contextlib.suppress(OSError):  # if even this fails, the next append cuts it
            os.ftruncate(fd, start)
        raise


def repair_torn_tail(fd: int) -> str | None:
    """Mend a last line left without its newline; call it holding flock(LOCK_EX) on fd.

    Under the lock no writer that takes it is in the middle of a write, so such a line
    was left by a writer that died (or whose write failed) part-way. The rule: repair
    only what a crash of our own left.
    - Ours (it starts inside the range this sink recorded on the file before its last
      append, and ends short of that range's end): cut. Its entries were never acked and
      come again.
    - Another writer's (any other, such as one that starts at or after the end of our last
      append): kept, and ended with a newline, so that what is appended next starts on a
      line of its own. Nothing of theirs is cut and nothing is glued to it; it stays, a
      line that does not parse, for its owner to see (the sink's dedup and
      `record_ids_in` skip it).
    - A file with no record (no append of this sink since it began recording, so maybe a
      torn line of an older version's; or a filesystem without user xattrs): cut, as
      before the record existed. It is a dead write, never a line still being written.
    Returns what was done, for the log, or None when the file ended with a newline."""
    size = os.lseek(fd, 0, os.SEEK_END)
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return None
    start = _last_line_start(fd, size)
    ours = _last_append(fd)
    if ours is None or ours[0] <= start < size < ours[1]:
        os.ftruncate(fd, start)
        whose = "a writer that died left (no record)" if ours is None else "the sink left"
        return f"cut the torn last line (bytes {start} to {size}) {whose}"
    os.write(fd, b"\n")
    return (
        f"another writer left a torn last line (bytes {start} to {size}); "
        "kept it and ended it with a newline"
    )


def _last_line_start(fd: int, size: int) -> int:
    end = size
    while end > 0:
        start = max(0, end - 65536)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _record_append(fd: int, start: int, end: int) -> None:
    try:
        os.setxattr(fd, APPEND_RECORD, b"%d %d" % (start, end))
    except OSError:
        # No record then, rather than a stale one that would take our torn line for
        # another writer's.
        with contextlib.suppress(OSError):
            os.removexattr(fd, APPEND_RECORD)


def _last_append(fd: int) -> tuple[int, int] | None:
    try:
        start, end = os.getxattr(fd, APPEND_RECORD).split()
        return int(start), int(end)
    except (OSError, ValueError):
        return None


def _key(event: bytes) -> bytes:
    return hashlib.blake2b(event, digest_size=16).digest()


def _events(path: Path) -> Iterator[dict[str, Any]]:
    """The events of a log's complete lines: a line still being written (no newline
    yet), or one that does not parse as `{"recorded_at": ..., "event": {...}}`, such as
    a dead writer's mended fragment, is skipped."""
    if not path.exists():
        return
    with path.open("rb") as lines:
        for line in lines:
            if not line.endswith(b"\n"):
                continue
            try:
                parsed = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(parsed, dict) and isinstance(event := parsed.get("event"), dict):
                yield event


def events_in(path: Path) -> set[bytes]:
    """Keys of the events of a log's complete lines, each encoded as the sink writes it."""
    return {_key(orjson.dumps(event)) for event in _events(path)}


def record_ids_in(path: Path) -> set[str]:
    """record_ids of the complete lines of a session log."""
    return {str(event.get("record_id")) for event in _events(path)}
