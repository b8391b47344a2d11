"""Helpers for producers: publish A3CPMessages to the tagger's input stream (the one of
the user's partition, when there are several)."""

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

from tagger.keys import Keys, partition_of
from tagger.settings import Settings

CHUNK = 500  # entries per pipeline round trip
Route = Callable[[bytes], str]  # payload -> stream


def router(settings: Settings) -> Route:
    """The input stream each payload goes to: its user's partition. A payload without a
    readable user_id goes to partition 0, where the tagger dead-letters it with a reason."""
    streams = [k.input_stream for k in Keys.every_partition(settings)]
    if len(streams) == 1:
        return lambda _payload: streams[0]

    def route(payload: bytes) -> str:
        try:
            user_id = orjson.loads(payload).get("user_id")
        except (orjson.JSONDecodeError, AttributeError):
            user_id = None
        return streams[partition_of(user_id, len(streams)) if isinstance(user_id, str) else 0]

    return route


def publish_for_user(client: Redis, settings: Settings, event: dict[str, Any]) -> bytes:
    """XADD one A3CPMessage to its user's partition; returns the entry id."""
    stream = Keys.of_user(settings, str(event["user_id"])).input_stream
    return publish_event(client, stream, event)


def publish_event(client: Redis, stream: str, event: dict[str, Any]) -> bytes:
    """XADD one A3CPMessage (as JSON in the field `data`); returns the entry id."""
    entry_id = client.xadd(stream, {"data": orjson.dumps(event)})
    return entry_id if isinstance(entry_id, bytes) else entry_id.encode()


def publish_raw(client: Redis, to: str | Route, payloads: Iterable[bytes]) -> Iterator[int]:
    """XADD each payload as field `data` to stream `to` (or the one `to(payload)` names),
    pipelined; yields the count after each chunk."""
    route: Route = (lambda _payload: to) if isinstance(to, str) else to
    pipe = client.pipeline(transaction=False)
    sent = 0
    for payload in payloads:
        pipe.xadd(route(payload), {"data": payload})
        sent += 1
        if sent % CHUNK == 0:
            pipe.execute()
            yield sent
    pipe.execute()
    yield sent


def jsonl_lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines of a JSONL file, without their line ends; validation is the tagger's."""
    with path.open("rb") as lines:
        for line in lines:
            if line := line.strip():
                yield line
