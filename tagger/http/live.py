"""Live pages' records: one reader per output stream, shared by every page that follows a
session of that stream (a reader per page read every entry of the stream for each page:
bench.app saw `tagger serve` spend 10-20% of a core on one open page at 2,000 events/s)."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from tagger.errors import TRANSIENT_ERRORS

log = logging.getLogger("tagger.http")
BLOCK_MS = 1000  # the reader wakes this often; pages get an idle comment as often
QUEUE_RECORDS = 10_000  # a page this far behind is dropped (it reloads to catch up)


class LiveHub:
    def __init__(self, client: Redis) -> None:
        self.client = client
        self._pages: dict[str, dict[bytes, set[asyncio.Queue[bytes | None]]]] = {}
        self._readers: dict[str, asyncio.Task[None]] = {}

    async def follow(self, stream: str, session_id: str) -> AsyncIterator[bytes]:
        """The session's new records as server-sent events, until the caller stops."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_RECORDS)
        ours = session_id.encode()
        pages = self._pages.setdefault(stream, {})
        pages.setdefault(ours, set()).add(queue)
        if stream not in self._readers:
            last: Any = await self.client.xrevrange(stream, count=1)
            after = last[0][0] if last else b"0-0"
            self._readers[stream] = asyncio.create_task(self._read(stream, after))
        try:
            yield b": following " + ours + b"\n\n"
            while (item := await queue.get()) is not None:
                yield item
        finally:
            pages[ours].discard(queue)
            if not pages[ours]:
                del pages[ours]
            if not pages:
                del self._pages[stream]
                self._readers.pop(stream).cancel()

    async def _read(self, stream: str, after: bytes) -> None:
        while True:
            try:
                replies: Any = await self.client.xread({stream: after}, block=BLOCK_MS, count=500)
            except TRANSIENT_ERRORS as exc:
                log.warning("live pages: cannot read %s (%s); retrying", stream, exc)
                await asyncio.sleep(1)
                continue
            pages = self._pages.get(stream, {})
            for _stream, entries in replies or []:
                for entry_id, fields in entries:
                    after = entry_id
                    for queue in pages.get(fields.get(b"session_id", b""), ()):
                        kind = fields.get(b"kind", b"message")
                        self._put(
                            queue, b"event: " + kind + b"\ndata: " + fields[b"data"] + b"\n\n"
                        )
            if not replies:
                for queues in pages.values():
                    for queue in queues:
                        self._put(queue, b": idle\n\n")  # proxies keep a quiet stream open

    @staticmethod
    def _put(queue: "asyncio.Queue[bytes | None]", item: bytes) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            queue.put_nowait(item)
