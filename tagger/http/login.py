"""/login for people: a token in, an HttpOnly, SameSite=Strict cookie out (never the
token itself); /logout ends it. A login URL with `?token=` (printed at start, as Jupyter
does) is taken once and answered with a redirect to a URL without it."""

import html
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tagger.http.auth import COOKIE, COOKIE_TTL_S
from tagger.http.deps import services

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Log in: A3CP sessions</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body><main>
<h1>A3CP sessions</h1>
{message}
<form method="post" action="/login">
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<input type="hidden" name="next" value="{next}">
<button type="submit">Log in</button>
</form>
<p>The token is in TAGGER_HTTP_TOKEN, the tokens file, or the data directory's
<code>http-token</code> file; <code>tagger serve</code> prints a login link when it starts.</p>
</main></body></html>
"""


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", token: str | None = None) -> Response:
    if token is not None:
        return _log_in(request, token, next)
    return HTMLResponse(PAGE.format(message="", next=html.escape(_local(next))))


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    token: Annotated[str, Form(max_length=512)],
    next: Annotated[str, Form()] = "/",
) -> Response:
    return _log_in(request, token, next)


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _log_in(request: Request, token: str, next: str) -> Response:
    tokens = services(request).tokens
    if tokens.bearer(token) is None:
        message = '<p role="alert">That token is not known here; check it and try again.</p>'
        return HTMLResponse(PAGE.format(message=message, next=html.escape(_local(next))), 401)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        COOKIE, tokens.cookie_for(token), max_age=COOKIE_TTL_S, path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


def _local(target: str) -> str:
    """Only a path on this server: a login must not send people elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
