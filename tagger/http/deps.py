"""What every route depends on: the shared services, and the caller's permission."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request
from redis import Redis
from redis.asyncio import Redis as AsyncRedis

from schemas.api import Problem
from tagger.http.auth import COOKIE, Caller, Permission, Tokens, is_loopback
from tagger.http.live import LiveHub
from tagger.keys import Keys
from tagger.settings import Settings

NO_TOKEN = (
    "a token is needed: send `Authorization: Bearer <token>` or log in at /login (the "
    "token is in TAGGER_HTTP_TOKEN, the tokens file, or <data dir>/http-token)"
)
# The error answers of the routes, for the OpenAPI document: each is a Problem (`detail`).
PROBLEMS = {
    400: "The body is not JSON text, or the request was refused (`detail` says why)",
    401: "No valid token (a bearer token or the login cookie)",
    403: "The token's role may not do this, or another site's page asked for a change",
    404: "No session has this id",
    409: "The session is closed already (for a bundle: it has no file yet)",
    411: "A chunked body: send Content-Length",
    413: "The body is over 64 KiB",
    503: "No tagger answered the request: is `tagger run` running?",
}
BODY_PROBLEMS = (400, 411, 413)  # what any route with a body may answer


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries of these error answers."""
    return {code: {"model": Problem, "description": PROBLEMS[code]} for code in codes}


@dataclass
class Services:
    """What the routes share: settings, clients, tokens, the partitions' keys."""

    settings: Settings
    client: Redis
    aclient: AsyncRedis
    tokens: Tokens
    partitions: list[Keys]
    live: "LiveHub" = field(init=False)

    def __post_init__(self) -> None:
        self.live = LiveHub(self.aclient)


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def authenticate(request: Request) -> Caller | None:
    tokens = services(request).tokens
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token:
        return tokens.bearer(token.strip())
    cookie = request.cookies.get(COOKIE)
    return tokens.from_cookie(cookie) if cookie else None


def signed_in(request: Request) -> Caller:
    """A dependency: any caller with a valid token, whatever their role."""
    caller = authenticate(request)
    if caller is None:
        raise HTTPException(401, NO_TOKEN, headers={"WWW-Authenticate": "Bearer"})
    return caller


def need(permission: Permission) -> Callable[[Request], Caller]:
    """A dependency: the caller, who must hold `permission` (401 without a valid token,
    403 when their role does not give it)."""

    def check(request: Request) -> Caller:
        caller = authenticate(request)
        if caller is None and permission == "upstream" and _open_upstream(request):
            return Caller("service", "loopback (TAGGER_HTTP_UPSTREAM_OPEN_ON_LOOPBACK)")
        if caller is None:
            raise HTTPException(401, NO_TOKEN, headers={"WWW-Authenticate": "Bearer"})
        if not caller.may(permission):
            raise HTTPException(
                403, f"the {caller.role} role may not do this ({permission}); use a token "
                "with a role that may (docs/operators.md, HTTP roles)",
            )  # fmt: skip
        return caller

    return check


def _open_upstream(request: Request) -> bool:
    settings = services(request).settings
    peer = request.client.host if request.client else ""
    return settings.http_upstream_open_on_loopback and is_loopback(peer)
