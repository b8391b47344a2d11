"""/login for people: a token in, an HttpOnly, SameSite=Strict cookie out (never the
token itself); /logout ends it. A login URL with `?token=` (printed at start, as Jupyter
does) is taken once and answered with a redirect to a URL without it."""

import base64
import hashlib
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tagger.http.auth import COOKIE, COOKIE_TTL_S
from tagger.http.deps import services
from tagger.http.headers import SECURITY_HEADERS

router = APIRouter(include_in_schema=False)

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
# The login page is the one page seen before a login, so its style is inline (the static
# files need a login too), allowed by its hash in that page's Content-Security-Policy.
CSS = (Path(__file__).parent / "static" / "app.css").read_text()
CSS_HASH = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
CSP = SECURITY_HEADERS["content-security-policy"].replace(
    "style-src 'self'", f"style-src 'self' 'sha256-{CSS_HASH}'"
)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/", token: str | None = None) -> Response:
    if token is not None:
        return _log_in(request, token, next)
    return _page(request, "", next)


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
        return _page(request, "That token is not known here; check it and try again.", next, 401)
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        COOKIE, tokens.cookie_for(token), max_age=COOKIE_TTL_S, path="/", httponly=True,
        samesite="strict", secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


def _page(request: Request, message: str, next: str, status: int = 200) -> Response:
    context = {"css": CSS, "message": message, "next": _local(next)}
    response = templates.TemplateResponse(request, "login.html", context, status_code=status)
    response.headers["content-security-policy"] = CSP
    return response


def _local(target: str) -> str:
    """Only a path on this server: a login must not send people elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") else "/"
