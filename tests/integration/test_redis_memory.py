"""The start-up check of what Redis may evict (shared/redis_memory.py), against real
redis-servers configured as operators do."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from edge_agent.redis_server import RedisServer
from shared.redis_memory import eviction_warnings


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.config_set("maxmemory", 0)
        await client.config_set("maxmemory-policy", "noeviction")
        await client.aclose()


async def test_no_limit_or_noeviction_is_safe(r: Redis) -> None:
    assert await eviction_warnings(r) == []
    await r.config_set("maxmemory", 100 * 2**20)
    assert await eviction_warnings(r) == []  # noeviction: full means refused writes, not lost jobs


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-lru", "volatile-ttl", "allkeys-random"])
async def test_a_policy_that_can_evict_the_queue_is_named(r: Redis, policy: str) -> None:
    await r.config_set("maxmemory", 100 * 2**20)
    await r.config_set("maxmemory-policy", policy)
    (warning,) = await eviction_warnings(r)
    assert policy in warning and "noeviction" in warning and "CACHE_REDIS_URL" in warning


async def test_a_separate_cache_redis_may_evict_but_should_not_refuse(r: Redis) -> None:
    cache = RedisServer().start()
    client = Redis.from_url(cache.url)
    try:
        await client.config_set("maxmemory", 10 * 2**20)
        await client.config_set("maxmemory-policy", "allkeys-lru")
        assert await eviction_warnings(r, client) == []
        await client.config_set("maxmemory-policy", "noeviction")
        (warning,) = await eviction_warnings(r, client)
        assert "allkeys-lru" in warning
    finally:
        await client.aclose()
        cache.stop()
