"""A tiny HTTP/1.1 server on the worker's event loop for /metrics, /health and /ready.

It answers GET only and closes each connection after one response: scrapers and health
probes need nothing more, and serving on the worker's own loop lets the handlers read the
worker's state and its Redis connection without threads."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

log = logging.getLogger("tagger.endpoint")
Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Awaitable[Response]]
_MAX_HEADER_BYTES = 16_384
_READ_TIMEOUT_S = 5.0


class Endpoint:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (the system's pick when `port` is 0)."""
        self._server = await asyncio.start_server(self._serve, host, port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            status, content_type, body = await self._respond(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            status, content_type, body = 400, "text/plain", b"bad request\n"
        reason = HTTPStatus(status).phrase
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _respond(self, head: bytes) -> Response:
        if len(head) > _MAX_HEADER_BYTES:
            return 431, "text/plain", b"request header too large\n"
        method, _, rest = head.partition(b" ")
        path = rest.split(b" ", 1)[0].split(b"?", 1)[0].decode("latin-1")
        route = self.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.routes))
            return 404, "text/plain", f"no such path; try {known}\n".encode()
        if method != b"GET":
            return 405, "text/plain", b"only GET is served\n"
        try:
            return await route()
        except Exception as exc:  # one failed answer must not stop the worker
            log.exception("answering %s failed", path)
            return 500, "text/plain", f"{type(exc).__name__}: {exc}\n".encode()
