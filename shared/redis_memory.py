"""What Redis may evict when it is full, checked at start.

The gateway's Redis holds two kinds of keys. The L2 cache can always be recomputed: losing an
entry costs one upstream call. Everything else (queues, jobs and their leases, reply streams,
breakers, virtual keys, limits and spend) must not vanish while it is in use: an evicted job is a
request that waits for nothing, an evicted spend hash is a budget that starts over. Redis's
eviction policies cannot tell the two apart (most of the second kind carry expiries too), so:

- one Redis for everything: `maxmemory-policy noeviction`, with the memory sized for the cache
  (its entries expire after `L2_CACHE_TTL`); when it fills, writes fail loudly instead of
  silently dropping a job;
- or the cache on its own Redis (`CACHE_REDIS_URL`), which may evict at will
  (`allkeys-lru` and a `maxmemory`), and `noeviction` on the main one.

`eviction_warnings` reads both settings (CONFIG GET; managed services that forbid it are
reported once and otherwise trusted) and says what is wrong, for the front and the workers to log
at start.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

SAFE_MAIN_POLICY = "noeviction"


async def _memory_settings(redis: Redis) -> tuple[int, str] | None:
    """(maxmemory bytes, maxmemory-policy), or None when CONFIG is not allowed."""
    try:
        found = await redis.config_get("maxmemory*")
    except RedisError:
        return None
    return int(found.get("maxmemory", 0) or 0), str(found.get("maxmemory-policy", ""))


async def eviction_warnings(main: Redis, cache: Redis | None = None) -> list[str]:
    """Why the gateway's keys could be evicted, or its cache could fill Redis, one per problem."""
    warnings: list[str] = []
    settings = await _memory_settings(main)
    if settings is None:
        warnings.append(
            "could not read Redis's maxmemory-policy (CONFIG is not allowed): make sure it is "
            "noeviction, or queued jobs and limits can be evicted"
        )
    else:
        limit, policy = settings
        if limit and policy != SAFE_MAIN_POLICY:
            where = "the cache and the queue" if cache is None else "the queue"
            warnings.append(
                f"Redis runs maxmemory-policy {policy} with maxmemory {limit}: when full it can evict "
                f"{where}'s keys (jobs, replies, limits, spend). Set maxmemory-policy noeviction, and "
                "put the cache on a Redis of its own (CACHE_REDIS_URL) if it must be bounded"
            )
    if cache is not None:
        cached = await _memory_settings(cache)
        if cached is not None and cached[0] and cached[1] == SAFE_MAIN_POLICY:
            warnings.append(
                "the cache Redis (CACHE_REDIS_URL) runs noeviction with a maxmemory: once full, "
                "answers are no longer cached; allkeys-lru keeps the most used ones"
            )
    return warnings


async def warn_about_eviction(main: Redis, cache: Redis | None, log: logging.Logger) -> None:
    """Log `eviction_warnings` at start; a Redis that does not answer yet is no reason to fail."""
    try:
        warnings = await eviction_warnings(main, cache)
    except (RedisError, OSError) as e:
        log.info("could not check Redis's eviction policy (%s)", type(e).__name__)
        return
    for warning in warnings:
        log.warning("%s", warning)
