"""The worker's /metrics, /health and /ready: a small Starlette app served by uvicorn on
the worker's own event loop.

Why this way: the HTTP parsing, limits and error answers (400, 431, keep-alive, slow
clients) are uvicorn's, not a server of ours; and running on the worker's loop lets the
handlers read the worker's state and its Redis connection without threads. We bind the
socket ourselves (port 0 picks a free one, and we can report it), and we call uvicorn's
startup(), main_loop() and shutdown() rather than serve(): serve() takes SIGINT and
SIGTERM for itself (Server.capture_signals), and the worker handles those. GET only;
every answer carries no-sniff and no-store headers."""

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response as HTTPResponse
from starlette.routing import Route as Page

log = logging.getLogger("tagger.endpoint")
Response = tuple[int, str, bytes]  # status, content type, body
Route = Callable[[], Awaitable[Response]]
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
CLOSE_TIMEOUT_S = 2.0


def _reply(status: int, content_type: str, body: bytes, **extra: str) -> HTTPResponse:
    # The content type as the handler gave it (Starlette's media_type would add a charset).
    headers = {"Content-Type": content_type, **SECURITY_HEADERS, **extra}
    return HTTPResponse(body, status_code=status, headers=headers)


class Endpoint:
    def __init__(self, routes: dict[str, Route]) -> None:
        self.routes = routes
        pages = [Page(p, self._page(p, route), methods=["GET"]) for p, route in routes.items()]
        handlers: dict[Any, Any] = {404: self._not_found, 405: self._not_allowed}
        self.app = Starlette(routes=pages, exception_handlers=handlers)
        self.app.router.redirect_slashes = False  # /metrics/ is no page, as before
        self._server: uvicorn.Server | None = None
        self._sockets: list[socket.socket] = []
        self._main_loop: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port (the system's pick when `port` is 0)."""
        config = uvicorn.Config(
            self.app, lifespan="off", log_config=None, access_log=False, ws="none",
            server_header=False, proxy_headers=False, timeout_graceful_shutdown=1,
        )  # fmt: skip
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # what serve() would have set
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn does
        listener = socket.create_server((host, port), family=family)  # OSError: port taken
        # Re-made from its descriptor it says IPPROTO_TCP, so asyncio turns Nagle off for
        # its connections (else a kept-alive scraper waits ~40 ms for each answer's body).
        sock = socket.socket(fileno=listener.detach())
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._sockets = server, [sock]
        self._main_loop = asyncio.create_task(server.main_loop(), name="tagger endpoint")
        bound: int = sock.getsockname()[1]
        return bound

    async def close(self) -> None:
        """Stop listening and let answers under way finish, for CLOSE_TIMEOUT_S at most."""
        server, main_loop, self._server = self._server, self._main_loop, None
        if server is None or main_loop is None:
            return
        server.should_exit = True  # main_loop() ends at its next tick (0.1 s)
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.wait([main_loop])  # (it raises nothing, even cancelled)
                await server.shutdown(sockets=self._sockets)
        except TimeoutError:
            log.warning("the endpoint did not stop in %.0f s; leaving it", CLOSE_TIMEOUT_S)
            main_loop.cancel()
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _page(self, path: str, route: Route) -> Callable[[Request], Awaitable[HTTPResponse]]:
        async def page(request: Request) -> HTTPResponse:
            if request.method != "GET":  # Starlette lets HEAD into a GET route
                return await self._not_allowed(request, None)
            try:
                return _reply(*await route())
            except Exception as exc:  # one failed answer must not stop the worker
                log.exception("answering %s failed", path)
                return _reply(500, "text/plain", f"{type(exc).__name__}: {exc}\n".encode())

        return page

    async def _not_found(self, _request: Request, _exc: Exception | None) -> HTTPResponse:
        known = ", ".join(sorted(self.routes))
        return _reply(404, "text/plain", f"no such path; try {known}\n".encode())

    async def _not_allowed(self, _request: Request, _exc: Exception | None) -> HTTPResponse:
        return _reply(405, "text/plain", b"only GET is served\n", Allow="GET")
