"""Helpers for producers: publish A3CPMessages to the tagger's input stream."""

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
from redis import Redis

CHUNK = 500  # entries per pipeline round trip


def publish_event(client: Redis, stream: str, event: dict[str, Any]) -> bytes:
    """XADD one A3CPMessage (as JSON in the field `data`); returns the entry id."""
    entry_id = client.xadd(stream, {"data": orjson.dumps(event)})
    return entry_id if isinstance(entry_id, bytes) else entry_id.encode()


def publish_raw(client: Redis, stream: str, payloads: Iterable[bytes]) -> Iterator[int]:
    """XADD each payload as field `data`, pipelined; yields the count after each chunk."""
    pipe = client.pipeline(transaction=False)
    sent = 0
    for payload in payloads:
        pipe.xadd(stream, {"data": payload})
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
