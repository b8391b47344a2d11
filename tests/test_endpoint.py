"""The worker's /metrics, /health, /ready endpoint (tagger.endpoint) on its own: uvicorn on
the caller's event loop, the answers of the hand-written server it replaced, and a stop
that neither hangs nor takes the worker's signals."""

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import httpx
import pytest

from tagger.endpoint import Endpoint, Response, Route


async def health() -> Response:
    return 200, "application/json", b'{"status":"ok"}'


async def metrics() -> Response:
    return 200, "text/plain; version=0.0.4; charset=utf-8", b"tagger_up 1\n"


async def broken() -> Response:
    raise RuntimeError("no server at redis://nowhere")


def serve(
    test: Callable[[Endpoint, httpx.AsyncClient], Awaitable[None]],
    extra: dict[str, Route] | None = None,
) -> None:
    """Run `test` against an Endpoint on port 0, with a client pointed at it."""

    async def main() -> None:
        endpoint = Endpoint({"/health": health, "/metrics": metrics, **(extra or {})})
        port = await endpoint.start("127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await test(endpoint, http)
        finally:
            await endpoint.close()

    asyncio.run(main())


def test_port_0_gives_a_real_port_and_the_pages_answer_as_their_handlers_say() -> None:
    async def test(_endpoint: Endpoint, http: httpx.AsyncClient) -> None:
        reply = await http.get("/health")
        assert (reply.status_code, reply.content) == (200, b'{"status":"ok"}')
        assert reply.headers["content-type"] == "application/json"
        reply = await http.get("/metrics?name=x")  # a query string changes nothing
        assert reply.status_code == 200 and reply.content == b"tagger_up 1\n"
        # The handler's content type as given (no charset added, none changed).
        assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["cache-control"] == "no-store"
        assert "server" not in reply.headers

    serve(test)


def test_unknown_paths_are_404_naming_the_known_ones_and_only_get_is_served() -> None:
    async def test(_endpoint: Endpoint, http: httpx.AsyncClient) -> None:
        for reply in (
            await http.get("/nowhere"),
            await http.get("/metrics/"),  # no redirect to /metrics
            await http.post("/nowhere"),  # the path first, then the method
        ):
            assert reply.status_code == 404
            assert reply.text == "no such path; try /health, /metrics\n"
            assert reply.headers["content-type"] == "text/plain"
            assert reply.headers["x-content-type-options"] == "nosniff"
        for method in ("POST", "HEAD", "DELETE"):
            reply = await http.request(method, "/health")
            assert reply.status_code == 405, method
            assert reply.headers["allow"] == "GET"
            assert reply.headers["cache-control"] == "no-store"
        assert (await http.post("/metrics")).text == "only GET is served\n"

    serve(test)


def test_a_handler_that_raises_gives_500_and_the_endpoint_keeps_serving() -> None:
    async def test(_endpoint: Endpoint, http: httpx.AsyncClient) -> None:
        for _ in range(2):
            reply = await http.get("/ready")
            assert reply.status_code == 500
            assert reply.text == "RuntimeError: no server at redis://nowhere\n"
            assert reply.headers["content-type"] == "text/plain"
            assert reply.headers["x-content-type-options"] == "nosniff"
            assert (await http.get("/health")).status_code == 200

    serve(test, {"/ready": broken})


def test_close_is_prompt_with_an_answer_hanging_and_frees_the_port() -> None:
    async def hangs() -> Response:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def main() -> None:
        endpoint = Endpoint({"/ready": hangs})
        port = await endpoint.start("127.0.0.1", 0)
        http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}")
        request = asyncio.create_task(http.get("/ready"))
        await asyncio.sleep(0.3)  # the request is in the handler now
        started = time.monotonic()
        await endpoint.close()
        assert time.monotonic() - started < 3.0
        # Cancelled after the grace period (1 s): uvicorn's own 500, not left hanging.
        assert (await asyncio.wait_for(request, timeout=1)).status_code == 500
        await http.aclose()
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        await endpoint.close()  # twice: nothing more to do

    asyncio.run(main())


def test_a_taken_port_is_an_os_error_and_the_callers_sigterm_stays_its_own() -> None:
    async def main() -> None:
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stopped.set)  # as the worker's FastStream
        before = signal.getsignal(signal.SIGTERM)
        endpoint = Endpoint({"/health": health})
        port = await endpoint.start("127.0.0.1", 0)
        try:
            with pytest.raises(OSError):
                await Endpoint({"/health": health}).start("127.0.0.1", port)
            assert signal.getsignal(signal.SIGTERM) == before
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(stopped.wait(), timeout=5)
        finally:
            await endpoint.close()
            loop.remove_signal_handler(signal.SIGTERM)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL

    asyncio.run(main())
