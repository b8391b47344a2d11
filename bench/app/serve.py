"""`tagger serve` beside the worker for bench.app: started on a free port with TOKEN, asked
for a user's active session; and stopping a process."""

import subprocess
import time
from pathlib import Path

import httpx

from bench.servers import free_port, tagger

TOKEN = "bench-app-token-0123456789"


def start_serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`tagger serve` on a free port with TOKEN; its base URL once /health answers."""
    port = free_port()
    serve_env = env | {"TAGGER_HTTP_PORT": str(port), "TAGGER_HTTP_TOKEN": TOKEN}
    with log.open("wb") as out:
        process = subprocess.Popen(tagger("serve"), env=serve_env, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"tagger serve did not start; see {log}")


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def active_session(base: str, user_id: str) -> str | None:
    reply = httpx.get(
        f"{base}/api/v1/sessions",
        params={"user_id": user_id, "status": "active"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    reply.raise_for_status()
    items = reply.json()["items"]
    return str(items[0]["session_id"]) if items else None
