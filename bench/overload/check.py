"""Step 4 of the overload run: every published record_id in the output exactly once."""

from typing import Any, cast

import orjson
from redis import Redis

from bench.streams import OUTPUT

CHECK_CHUNK = 10_000


def check_output(client: Redis, prefix: str, published: int) -> tuple[int, int, int]:
    """(lost, doubled, foreign): the published record_ids not in the output as kind
    "message", those in it more than once, and messages of no record_id of ours."""
    seen = bytearray(published)
    foreign = 0
    start = "-"
    tail = len(prefix)
    while entries := cast(Any, client.xrange(OUTPUT, min=start, max="+", count=CHECK_CHUNK)):
        for _entry_id, fields in entries:
            if fields.get(b"kind") != b"message":
                continue
            record_id: str = orjson.loads(fields[b"data"])["record_id"]
            n = int(record_id[tail:], 16) if record_id.startswith(prefix) else -1
            if 0 <= n < published:
                seen[n] = min(seen[n] + 1, 255)
            else:
                foreign += 1
        start = "(" + entries[-1][0].decode()
    return seen.count(0), published - seen.count(0) - seen.count(1), foreign
