"""The clients: a write on a connection closed under it is a ConnectionError."""

import asyncio

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import ConnectionError as RedisConnectionError

from tagger.connect import node_url


def test_a_write_on_a_connection_closed_meanwhile_is_a_connection_error(server_url: str) -> None:
    # The race of a failover: another task disconnects the connection between
    # redis-py's "is it connected?" and its write (here at the health check, the await
    # in between). redis-py 8.1 raised AttributeError there, which no retry handles.
    async def write_after_a_disconnect() -> None:
        client = AsyncRedis.from_url(node_url(server_url))
        connection = await client.connection_pool.get_connection()

        async def disconnect_instead_of_checking() -> None:
            await connection.disconnect()

        connection.check_health = disconnect_instead_of_checking  # type: ignore[method-assign]
        try:
            with pytest.raises(RedisConnectionError, match="closed while writing"):
                await connection.send_packed_command(connection.pack_command("PING"))
        finally:
            await client.connection_pool.release(connection)
            await client.aclose()

    asyncio.run(write_after_a_disconnect())
