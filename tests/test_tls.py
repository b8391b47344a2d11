"""rediss:// with certificate checks, against a real TLS server (Debian's redis-server)."""

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import trustme
from redis import Redis
from redis.exceptions import RedisError

from tests.conftest import SettingsFactory, event, free_port, streams, tagger_cmd, tagger_env

REDIS_SERVER = shutil.which("redis-server")


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A TLS-only redis-server on loopback; yields (port, CA file)."""
    if REDIS_SERVER is None:
        pytest.skip("needs a redis-server built with TLS (Debian's package is)")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    port = free_port()
    options = {
        "port": "0",  # TLS only
        "tls-port": str(port),
        "bind": "127.0.0.1",
        "tls-cert-file": str(tmp_path / "server.pem"),
        "tls-key-file": str(tmp_path / "server.key"),
        "tls-ca-cert-file": str(tmp_path / "ca.pem"),
        "tls-auth-clients": "no",
        "save": "",
        "appendonly": "no",
        "dir": str(tmp_path),
    }
    args = [arg for name, value in options.items() for arg in (f"--{name}", value)]
    server = subprocess.Popen([REDIS_SERVER, *args], stdout=subprocess.DEVNULL)
    with Redis.from_url(
        f"rediss://127.0.0.1:{port}", ssl_ca_certs=str(tmp_path / "ca.pem")
    ) as client:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except RedisError:
                assert time.monotonic() < deadline, "the TLS server did not start"
                time.sleep(0.05)
    yield port, tmp_path / "ca.pem"
    server.terminate()
    server.wait()


def test_rediss_with_the_servers_ca_works_end_to_end(
    tls_server: tuple[int, Path], make_settings: SettingsFactory, tmp_path: Path
) -> None:
    port, ca = tls_server
    settings = make_settings(redis_url=f"rediss://127.0.0.1:{port}?ssl_ca_certs={ca}")
    env = tagger_env(settings)
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"".join(orjson.dumps(event(ts_ms=1_750_000_000_000 + i)) + b"\n" for i in range(5))
    )
    for args in (("publish", str(source)), ("run", "--burst"), ("health",)):
        done = subprocess.run(tagger_cmd(*args), env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    with Redis.from_url(f"rediss://127.0.0.1:{port}", ssl_ca_certs=str(ca)) as client:
        assert client.xlen(streams(settings).output_stream) == 6  # a session.start and the 5 events


@pytest.mark.parametrize("command", [("health",), ("run", "--burst")])
def test_an_untrusted_certificate_is_refused_with_advice(
    tls_server: tuple[int, Path], make_settings: SettingsFactory, command: tuple[str, ...]
) -> None:
    port, _ca = tls_server
    settings = make_settings(redis_url=f"rediss://127.0.0.1:{port}")  # no CA: system roots
    done = subprocess.run(
        tagger_cmd(*command), env=tagger_env(settings), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert "ssl_ca_certs=" in done.stderr  # says what to do
    assert "Traceback" not in done.stderr
