"""File paths built only from validated ids, never leaving the data directory."""

import os
import re
from pathlib import Path

from schemas import SESSION_ID_PATTERN, USER_ID_PATTERN
from tagger.errors import TaggerError

_USER_ID = re.compile(USER_ID_PATTERN)
_SESSION_ID = re.compile(SESSION_ID_PATTERN)


class UnsafePath(TaggerError):
    """An id that is not a safe path segment, or a path that leaves the data directory."""


def session_log_path(data_dir: Path, user_id: str, session_id: str) -> Path:
    """`<data dir>/logs/users/<user_id>/sessions/<session_id>.jsonl`, checked."""
    if not _USER_ID.fullmatch(user_id) or not _SESSION_ID.fullmatch(session_id):
        raise UnsafePath(
            f"refusing to build a log path from user_id={user_id!r}, session_id={session_id!r}; "
            "only ids the tagger validated belong in the tagged stream"
        )
    return inside(data_dir, Path("logs", "users", user_id, "sessions", f"{session_id}.jsonl"))


def user_log_dir(data_dir: Path, user_id: str) -> Path:
    """`<data dir>/logs/users/<user_id>`, checked."""
    if not _USER_ID.fullmatch(user_id):
        raise UnsafePath(f"{user_id!r} is not a user id the tagger accepts; check the spelling")
    return inside(data_dir, Path("logs", "users", user_id))


def inside(data_dir: Path, relative: Path) -> Path:
    """data_dir / relative, refused if a symlink or '..' would lead it outside data_dir."""
    root = data_dir.resolve()
    path = root / relative
    real_parent = Path(os.path.realpath(path.parent))
    if real_parent != root and root not in real_parent.parents:
        raise UnsafePath(f"{path} resolves outside {root}; remove the symlink that leads there")
    return path


def make_dirs(path: Path) -> None:
    """Create path's missing parents, each private to the service (0700). (mkdir's
    parents=True would give the intermediate ones the default mode.)"""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)


def open_private(path: Path, flags: int) -> int:
    """os.open that never follows a final symlink and creates files 0600."""
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
