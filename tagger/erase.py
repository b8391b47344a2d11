"""`tagger erase --user U`: remove a user's sessions and events from Redis and the files.

The file sinks are paused meanwhile, so they cannot write the user's entries back from
what they hold. Events of the user that are published *during* the erasure are tagged as
usual: stop the user's publishers first."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from exporters import SINK_NAMES
from exporters.erase import erase_files
from exporters.paths import user_log_dir
from exporters.runner import sinks_paused
from tagger.intake import payload_of
from tagger.keys import Keys
from tagger.registry import user_partition

Fields = dict[bytes, bytes]
_CHUNK = 1000


def erase_user(
    client: Redis, partitions: list[Keys], data_dir: Path, user_id: str
) -> dict[str, int]:
    """Everything of `user_id`, gone; returns what was removed, by kind. The state lives
    in the user's partition; entries are looked for in every partition (a producer that
    published to the wrong one left them there, dead-lettered)."""
    user_log_dir(data_dir, user_id)  # refuses what is not a user id, before any change
    home = user_partition(partitions, user_id)
    with sinks_paused(client, partitions, list(SINK_NAMES), "erase"):
        report = _erase_state(client, home, user_id)
        theirs = _by_user(user_id)
        ours = user_id.encode()
        found = dict.fromkeys(
            ("output_entries", "input_entries", "dead_letters", "control_requests"), 0
        )
        for keys in partitions:
            found["output_entries"] += _delete_entries(
                client, keys.output_stream, lambda f: f.get(b"user_id") == ours
            )
            found["input_entries"] += _delete_entries(client, keys.input_stream, theirs)
            found["dead_letters"] += _delete_entries(client, keys.dead_letter_stream, theirs)
            found["control_requests"] += _delete_entries(client, keys.control_stream, theirs)
        report.update(found)
        report.update(erase_files(data_dir, user_id))
    return report


def _erase_state(client: Redis, keys: Keys, user_id: str) -> dict[str, int]:
    session_ids: Any = client.zrange(keys.user_sessions(user_id), 0, -1)
    with client.pipeline(transaction=True) as pipe:
        for sid in session_ids:
            pipe.delete(keys.session(sid.decode()))
            pipe.zrem(keys.session_index, sid)
            pipe.zrem(keys.deadlines, sid)
        pipe.hdel(keys.active, user_id)
        pipe.delete(keys.user_sessions(user_id))
        pipe.zrem(keys.users, user_id)
        pipe.execute()
    return {"sessions": len(session_ids)}


def _by_user(user_id: str) -> Callable[[Fields], bool]:
    """Does an input-like entry (an event or control request in `data`) belong to the user?
    Entries that are not JSON count as theirs when they hold the id as a JSON string."""
    quoted = orjson.dumps(user_id)

    def theirs(fields: Fields) -> bool:
        raw = payload_of(fields) or b""
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return quoted in raw
        return isinstance(event, dict) and event.get("user_id") == user_id

    return theirs


def _delete_entries(client: Redis, stream: str, theirs: Callable[[Fields], bool]) -> int:
    deleted, start = 0, "-"
    while True:
        entries: Any = client.xrange(stream, min=start, max="+", count=_CHUNK)
        doomed = [entry_id for entry_id, fields in entries if theirs(fields)]
        if doomed:
            deleted += client.xdel(stream, *doomed)
        if len(entries) < _CHUNK:
            return deleted
        start = "(" + entries[-1][0].decode()
