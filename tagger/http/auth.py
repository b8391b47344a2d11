"""Who may call `tagger serve`: bearer tokens with roles, and a login cookie for people.

A token comes from TAGGER_HTTP_TOKEN (every role), from a tokens file (`<role> <token>
[name]` per line), or, on loopback with neither, from `<data dir>/http-token`, made on
first start (0600) as Jupyter does. The cookie never holds a token: it names the token by
a fingerprint and is signed with a key of the data dir, so removing a token from the file
also ends the sessions logged in with it."""

import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from exporters.paths import make_dirs, open_private
from tagger.errors import TaggerError
from tagger.settings import Settings

Role = Literal["viewer", "caregiver", "service", "admin"]
Permission = Literal["read", "write", "upstream", "erase"]
ROLES: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "caregiver": frozenset({"read", "write"}),
    "service": frozenset({"upstream"}),
    "admin": frozenset({"read", "write", "upstream", "erase"}),
}
COOKIE = "tagger_session"
COOKIE_TTL_S = 12 * 3600  # a working day; then log in again


class AuthConfigError(TaggerError):
    """The tokens cannot be set up as configured."""


@dataclass(frozen=True)
class Caller:
    role: str
    name: str

    def may(self, permission: Permission) -> bool:
        return permission in ROLES[self.role]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Tokens:
    """The tokens `tagger serve` accepts, and the cookies it signs for them."""

    def __init__(self, tokens: dict[str, Caller], cookie_key: bytes, made: Path | None) -> None:
        # Held by fingerprint: a token itself is compared once, in constant time.
        self._by_print = {_fingerprint(t): (t, c) for t, c in tokens.items()}
        self._key = cookie_key
        self.made = made  # the token file this start wrote or found, if any

    @classmethod
    def from_settings(cls, settings: Settings) -> "Tokens":
        tokens: dict[str, Caller] = {}
        if settings.http_token is not None:
            tokens[settings.http_token.get_secret_value()] = Caller("admin", "TAGGER_HTTP_TOKEN")
        if settings.http_tokens_file is not None:
            tokens |= _read_tokens_file(settings.http_tokens_file)
        made = None
        if not tokens:
            if not is_loopback(settings.http_host):
                raise AuthConfigError(
                    f"TAGGER_HTTP_HOST={settings.http_host} is beyond loopback and no token "
                    "is configured: anyone who reaches the port could read and change "
                    "sessions. Set TAGGER_HTTP_TOKEN or TAGGER_HTTP_TOKENS_FILE, or listen "
                    "on 127.0.0.1"
                )
            made = settings.data_dir / "http-token"
            tokens[_private_secret(made, lambda: secrets.token_urlsafe(32))] = Caller(
                "admin", "http-token"
            )
        key = _private_secret(settings.data_dir / "http-cookie-key", lambda: secrets.token_hex(32))
        return cls(tokens, key.encode(), made)

    def bearer(self, token: str) -> Caller | None:
        found = self._by_print.get(_fingerprint(token))
        if found is None or not hmac.compare_digest(found[0], token):
            return None
        return found[1]

    def cookie_for(self, token: str) -> str:
        expires = int(time.time()) + COOKIE_TTL_S
        body = f"{_fingerprint(token)}.{expires}"
        return f"{body}.{self._sign(body)}"

    def from_cookie(self, value: str) -> Caller | None:
        body, _, signature = value.rpartition(".")
        print_, _, expires = body.partition(".")
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        if not expires.isdigit() or int(expires) < time.time():
            return None
        found = self._by_print.get(print_)
        return found[1] if found else None

    def any_token(self) -> str:
        """A token to print in the login URL at start (the one this start made)."""
        return next(t for t, _ in self._by_print.values())

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:24]


def _read_tokens_file(path: Path) -> dict[str, Caller]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise AuthConfigError(
            f"cannot read TAGGER_HTTP_TOKENS_FILE {path} ({exc.strerror}); fix the path "
            "or its permissions"
        ) from exc
    tokens: dict[str, Caller] = {}
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) not in (2, 3) or words[0] not in ROLES or len(words[1]) < 16:
            raise AuthConfigError(
                f"{path}:{n}: expected `<role> <token> [name]` with a role of "
                f"{', '.join(ROLES)} and a token of at least 16 characters; fix that line"
            )
        tokens[words[1]] = Caller(words[0], words[2] if len(words) == 3 else f"line {n}")
    return tokens


def _private_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, written (0600) first if there is none yet."""
    if path.exists():
        return path.read_text().strip()
    make_dirs(path)
    value = make()
    try:
        fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:  # another `tagger serve` made it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value
