"""Searches over the session registry for `tagger serve`: filtered pages with a total, and
users with their latest activity.

A page costs a count per partition (ZCOUNT) and the page's own hashes when it filters only
by user and time, which is what the app asks for; a filter on status, training flag or
close reason reads every session of the time window, so give `since`/`user_id` with it
(docs/operators.md)."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from exporters.bundle import read_events
from exporters.paths import session_log_path
from tagger.keys import Keys
from tagger.registry import hydrate, user_partition
from tagger.rules.state import decode_state

SCAN_CHUNK = 500


@dataclass(frozen=True)
class Filters:
    user_id: str | None = None
    status: str | None = None  # "active" | "closed"
    since_ms: int | None = None
    until_ms: int | None = None
    training: bool | None = None
    close_reason: str | None = None
    scan: bool = False  # read every session of the window (a search does)

    def by_fields(self) -> bool:
        return self.scan or any(
            x is not None for x in (self.status, self.training, self.close_reason)
        )

    def accepts(self, s: dict[str, Any]) -> bool:
        return (
            (self.status is None or s["status"] == self.status)
            and (self.training is None or bool(s.get("is_training_data")) == self.training)
            and (self.close_reason is None or s.get("close_reason") == self.close_reason)
        )


def find_sessions(
    client: Redis, partitions: Sequence[Keys], f: Filters, limit: int, offset: int
) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, the page of them newest first)."""
    if f.user_id is not None:
        partitions = [user_partition(partitions, f.user_id)]
    low = f.since_ms if f.since_ms is not None else "-inf"
    high = f.until_ms if f.until_ms is not None else "+inf"
    indexes = [
        (k, k.user_sessions(f.user_id) if f.user_id else k.session_index) for k in partitions
    ]
    if not f.by_fields():
        pipe = client.pipeline(transaction=False)
        for _keys, index in indexes:
            pipe.zcount(index, low, high)
            pipe.zrevrangebyscore(index, high, low, start=0, num=offset + limit, withscores=True)
        replies = pipe.execute()
        total = sum(replies[0::2])
        ranked = sorted(
            ((score, sid, keys) for (keys, _), found in zip(indexes, replies[1::2], strict=True)
             for sid, score in found),
            key=lambda t: t[0], reverse=True,
        )  # fmt: skip
        page = ranked[offset : offset + limit]
        return total, [s for s in hydrate(client, [(k, sid) for _, sid, k in page]) if s]
    if f.status is not None and f.training is None and f.close_reason is None and not f.scan:
        return _by_status(client, indexes, f, low, high, limit, offset)
    matches: list[dict[str, Any]] = []
    for keys, index in indexes:
        start, ids = 0, _ids(client.zrevrangebyscore(index, high, low, start=0, num=SCAN_CHUNK))
        while ids:
            start += len(ids)
            matches += [s for s in hydrate(client, [(keys, sid) for sid in ids]) if f.accepts(s)]
            ids = _ids(client.zrevrangebyscore(index, high, low, start=start, num=SCAN_CHUNK))
    matches.sort(key=lambda s: s["start_ms"], reverse=True)
    return len(matches), matches[offset : offset + limit]


def _by_status(
    client: Redis, indexes: Sequence[tuple[Keys, str]], f: Filters, low: Any, high: Any,
    limit: int, offset: int,
) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    """A status filter without reading every session of the window: the active ones are
    those in the partitions' active hashes (one per user at most), the closed ones the rest
    of the index; only the page's hashes are read."""
    active: set[bytes] = set()
    for keys, _index in indexes:
        states: Any = client.hgetall(keys.active)
        active |= {sid.encode() for p in states.values() if (sid := _active_sid(p))}
    asked: Any = list(active)
    ranked: list[tuple[float, bytes, Keys]] = []
    total = 0
    for keys, index in indexes:
        if f.status == "active":
            scores: Any = client.zmscore(index, asked) if active else []
            found = [(sc, sid) for sid, sc in zip(asked, scores, strict=True) if sc is not None]
            found = [(sc, sid) for sc, sid in found if _within(sc, low, high)]
            total += len(found)
            ranked += [(sc, sid, keys) for sc, sid in found]
            continue
        counted: Any = client.zcount(index, low, high)
        active_here: Any = client.zmscore(index, asked) if active else []
        total += int(counted) - sum(
            1 for sc in active_here if sc is not None and _within(sc, low, high)
        )
        start = 0
        mine = 0
        while mine < offset + limit:
            ids: Any = client.zrevrangebyscore(index, high, low, start=start, num=SCAN_CHUNK,
                                               withscores=True)  # fmt: skip
            if not ids:
                break
            start += len(ids)
            for sid, sc in ids:
                if sid not in active:
                    ranked.append((sc, sid, keys))
                    mine += 1
    ranked.sort(key=lambda t: t[0], reverse=True)
    page = ranked[offset : offset + limit]
    found_page = hydrate(client, [(k, sid) for _, sid, k in page])
    # One that changed status between the two reads is left out of this page, not shown wrong.
    return total, [x for x in found_page if x["status"] == f.status]


def _within(score: float, low: Any, high: Any) -> bool:
    return bool((low == "-inf" or score >= low) and (high == "+inf" or score <= high))


def search_sessions(
    client: Redis, partitions: Sequence[Keys], f: Filters, text: str, data_dir: Path,
    limit: int, offset: int,
) -> tuple[int, list[dict[str, Any]]]:  # fmt: skip
    """Sessions matching `f` whose start notes, label or later notes hold `text` (any
    case). It reads every session `f` lets through, and the files of those with notes."""
    needle = text.casefold()

    def holds(s: dict[str, Any]) -> bool:
        own = f"{s.get('session_notes', '')} {s.get('training_intent_label', '')}"
        if needle in own.casefold():
            return True
        if not s.get("notes"):
            return False
        path = session_log_path(data_dir, s["user_id"], s["session_id"])
        return path.exists() and any(
            needle in str(e.get("note", "")).casefold()
            for e in read_events(path) if e.get("kind") == "session.note"
        )  # fmt: skip

    everything = Filters(f.user_id, f.status, f.since_ms, f.until_ms, f.training, f.close_reason,
                         scan=True)  # fmt: skip
    _, found = find_sessions(client, partitions, everything, 10**9, 0)
    matches = [s for s in found if holds(s)]
    return len(matches), matches[offset : offset + limit]


def active_sessions(client: Redis, partitions: Sequence[Keys]) -> dict[str, dict[str, Any]]:
    """user id -> their active session (with live figures)."""
    found: list[tuple[Keys, bytes]] = []
    for keys in partitions:
        states: Any = client.hgetall(keys.active)
        for packed in states.values():
            sid = _active_sid(packed)
            if sid:
                found.append((keys, sid.encode()))
    return {s["user_id"]: s for s in hydrate(client, found) if s["status"] == "active"}


def _active_sid(packed: bytes) -> str | None:
    return decode_state(packed).sid or None


def list_users(
    client: Redis, partitions: Sequence[Keys], limit: int, offset: int
) -> tuple[int, list[tuple[str, int]]]:
    """(how many users, a page of (user id, latest start or end in ms), latest first)."""
    pipe = client.pipeline(transaction=False)
    for keys in partitions:
        pipe.zcard(keys.users)
        pipe.zrevrange(keys.users, 0, offset + limit - 1, withscores=True)
    replies = pipe.execute()
    ranked = sorted(
        ((u.decode(), int(score)) for found in replies[1::2] for u, score in found),
        key=lambda t: t[1], reverse=True,
    )  # fmt: skip
    return sum(replies[0::2]), ranked[offset : offset + limit]


def backfill_users(client: Redis, partitions: Sequence[Keys]) -> int:
    """Fill the users index from the sessions of a registry older than it; how many users."""
    added = 0
    for keys in partitions:
        if client.exists(keys.users) or not client.zcard(keys.session_index):
            continue
        latest: dict[str, int] = {}
        start = 0
        while ids := _ids(client.zrange(keys.session_index, start, start + SCAN_CHUNK - 1)):
            start += len(ids)
            pipe = client.pipeline(transaction=False)
            for sid in ids:
                pipe.hmget(keys.session(sid.decode()), ["user_id", "start_ms", "end_ms"])
            for user, start_ms, end_ms in pipe.execute():
                if user:
                    when = max(int(start_ms or 0), int(end_ms or 0))
                    latest[user.decode()] = max(latest.get(user.decode(), 0), when)
        if latest:
            client.zadd(keys.users, latest, gt=True)
            added += len(latest)
    return added


def _ids(reply: Any) -> list[bytes]:
    return list(reply)
