"""The ASGI app of `tagger serve`: the upstream session_manager routes, /api/v1, login.

Built on FastAPI (upstream A3CP's own stack): the request and answer models are the
pydantic models of schemas/, and /openapi.json is generated from them, so the document
cannot drift from what is served. The app keeps no session state: it reads the registry
and the files, and asks the partition's owner to start, end and note sessions through the
control stream (one writer of session state)."""

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from tagger.http.auth import Caller
from tagger.http.deps import Services, signed_in
from tagger.http.headers import SECURITY_HEADERS

log = logging.getLogger("tagger.http")
MAX_BODY_BYTES = 64 * 1024  # a note or a start is a few KiB; nothing legitimate is larger
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def create_app(services: Services) -> FastAPI:
    from tagger.http import api, login, pages, upstream

    app = FastAPI(
        title="A3CP session tagger",
        version="1",
        description="The A3CP session_manager contract (/session_manager) and the "
        "tagger's own API (/api/v1). Every route but /health needs a token: "
        "`Authorization: Bearer <token>`, or the cookie /login sets.",
        docs_url=None,  # the interactive docs load scripts from a CDN: not offline
        redoc_url=None,
        openapi_url=None,  # served below, behind a token like every route
    )
    app.state.services = services
    app.include_router(upstream.router)
    app.include_router(api.router)
    app.include_router(login.router)
    app.include_router(pages.router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        """Liveness: the process answers (no token; says nothing about the data)."""
        return {"status": "ok"}

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Annotated[Caller, Depends(signed_in)]) -> dict[str, Any]:
        return app.openapi()

    @app.middleware("http")
    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refusal = _refuse(request)
        response = refusal if refusal is not None else await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _reasons(exc.errors())}, status_code=422)

    @app.exception_handler(HTTPException)
    async def problem(_request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(pages.LoginNeeded)
    async def to_login(_request: Request, exc: pages.LoginNeeded) -> Response:
        return RedirectResponse(exc.target, status_code=303)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse(
            {"detail": f"the server failed ({type(exc).__name__}); it is in the log of "
             "`tagger serve`: report it with that log line"},
            status_code=500,
        )  # fmt: skip

    return app


def _refuse(request: Request) -> Response | None:
    """Too large a body, or a state change asked by another site's page."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse(
            {"detail": f"the body is over {MAX_BODY_BYTES // 1024} KiB; send less (a note "
             "holds at most 8,000 characters)"},
            status_code=413,
        )  # fmt: skip
    if request.method in UNSAFE_METHODS and "transfer-encoding" in request.headers:
        return JSONResponse(
            {"detail": "chunked bodies are not accepted; send Content-Length"}, status_code=411
        )
    origin = request.headers.get("origin")
    if request.method in UNSAFE_METHODS and origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            return JSONResponse(
                {"detail": f"a request from {origin} may not change anything here; use the "
                 f"app at {own} or send no Origin (programs)"},
                status_code=403,
            )  # fmt: skip
    return None


def _reasons(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's validation errors without echoing the input (it may be large or private)."""
    return [{k: e.get(k) for k in ("type", "loc", "msg")} for e in errors]
