"""The test setup's redis-server is real: it answers the async client, and stops when told."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from tests._redis import RedisServer

pytestmark = pytest.mark.redis


async def test_the_fixture_serves_a_real_redis_on_a_loopback_port(
    redis_server: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        assert await client.incrbyfloat("k", 1.5) == 1.5
        assert (await client.info("server"))["tcp_port"] == redis_server.port
    finally:
        await client.aclose()


async def test_a_stopped_server_refuses_connections(redis_server: RedisServer) -> None:
    redis_server.stop()
    client = aioredis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    try:
        with pytest.raises(aioredis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()
