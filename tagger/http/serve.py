"""Run `tagger serve`: the app on uvicorn, on TAGGER_HTTP_HOST:TAGGER_HTTP_PORT."""

import logging
import socket

import uvicorn

from tagger.connect import async_client, sync_client
from tagger.http.app import create_app
from tagger.http.auth import Tokens
from tagger.http.deps import Services
from tagger.keys import Keys
from tagger.query import backfill_users
from tagger.settings import Settings

log = logging.getLogger("tagger.http")


def serve(settings: Settings, url: str) -> None:
    """Serve until stopped (SIGINT/SIGTERM: uvicorn's own graceful stop)."""
    tokens = Tokens.from_settings(settings)
    client = sync_client(url)
    partitions = Keys.every_partition(settings)
    if added := backfill_users(client, partitions):
        log.info("users index filled from the registry (%d users)", added)
    services = Services(settings, client, async_client(url), tokens, partitions)
    listener = socket.create_server((settings.http_host, settings.http_port), reuse_port=False)
    # Re-made from its descriptor, the socket says IPPROTO_TCP (create_server leaves proto
    # 0), and asyncio turns Nagle off (TCP_NODELAY) only on sockets that say so: without
    # it an answer's body, written after its headers, waited for the client's delayed ACK,
    # 40 ms on every request of a connection after its first (bench/http_reads.py).
    sock = socket.socket(fileno=listener.detach())
    port = sock.getsockname()[1]
    base = f"http://{_host_for_url(settings.http_host)}:{port}"
    log.info("serving on %s (API at %s/api/v1, OpenAPI at %s/openapi.json)", base, base, base)
    if tokens.made is not None:
        # Printed, not logged: a log line must never carry a token.
        where = f"(the token is in {tokens.made}, readable by this user only)"
        print(f"Log in: {base}/login?token={tokens.any_token()}\n{where}", flush=True)
    config = uvicorn.Config(
        create_app(services), log_config=None, access_log=False, server_header=False,
        proxy_headers=False, timeout_graceful_shutdown=5,
    )  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        client.close()


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
