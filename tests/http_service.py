"""`tagger serve` and `tagger run` as subprocesses for the HTTP tests, with a token per role."""

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tagger.settings import Settings
from tests.conftest import free_port, tagger_cmd, tagger_env, wait_for

ROLE_TOKENS = {
    "viewer": "viewer-token-0123456789",
    "caregiver": "caregiver-token-0123456789",
    "service": "service-token-0123456789",
    "admin": "admin-token-0123456789",
}


@dataclass
class Served:
    settings: Settings
    base: str
    process: subprocess.Popen[bytes]

    def client(self, role: str | None = "admin", **options: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {ROLE_TOKENS[role]}"} if role else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=20, **options)  # type: ignore[arg-type]


def tokens_file(folder: Path) -> Path:
    path = folder / "tokens"
    path.write_text("".join(f"{role} {token} {role}-name\n" for role, token in ROLE_TOKENS.items()))
    path.chmod(0o600)
    return path


@contextmanager
def serving(settings: Settings, worker: bool = True, **env: str) -> Iterator[Served]:
    """`tagger serve` (and a `tagger run` beside it) on these settings until the block ends."""
    port = free_port()
    base_env = tagger_env(settings) | {"TAGGER_HTTP_PORT": str(port)}
    base_env |= {"TAGGER_HTTP_TOKENS_FILE": str(tokens_file(settings.data_dir.parent))} | env
    base_env = {k: v for k, v in base_env.items() if v != ""}  # "": leave that setting unset
    processes = []
    if worker:
        processes.append(subprocess.Popen(tagger_cmd("run"), env=tagger_env(settings)))
    server = subprocess.Popen(tagger_cmd("serve"), env=base_env)
    processes.append(server)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base), timeout_s=30)
        yield Served(settings, base, server)
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
