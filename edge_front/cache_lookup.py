"""Looking in the cache tiers on the front: L1 in-process, then L2 in Redis when the miss script
does not (its own Redis, `CACHE_REDIS_URL`, or a breaker not closed); what a hit is counted as,
and dropping an unreadable entry from both tiers."""

from __future__ import annotations

from redis.exceptions import RedisError

from edge_front import metrics
from edge_front.state import FrontState
from shared import keyspace
from shared.costs import fresh, l1_ttl_s, split_entry


async def evict(state: FrontState, key: str) -> None:
    state.l1.delete(key)
    if state.settings.enable_l2_cache:
        try:
            await state.cache_redis.delete(keyspace.cache_entry(key))
        except (TimeoutError, RedisError, OSError):
            metrics.CACHE_ERRORS.inc()


async def lookup(
    state: FrontState, key: str, oldest: float | None, l2: bool = True
) -> tuple[str, bytes, float] | None:
    """A hit as (tier, answer, stored), from L1, then L2 when it is on and `l2`; only one stored
    at `oldest` or later, when given (max-age). (`edge_front.tracing.cache_lookup` does the same
    in spans.)"""
    hit = l1_get(state, key, oldest)
    if hit is None and l2 and state.settings.enable_l2_cache:
        hit = await l2_get(state, key, oldest)
    return hit


def l1_get(state: FrontState, key: str, oldest: float | None) -> tuple[str, bytes, float] | None:
    entry = state.l1.get(key)
    if entry is not None and oldest is not None and entry[2] < oldest:
        entry = None  # too old for this request; kept for others
    if entry is not None:
        metrics.CACHE_HITS.labels("l1").inc()
        metrics.CACHE_SAVINGS.inc(entry[1])
        return "hit-l1", entry[0], entry[2]
    metrics.CACHE_MISSES.labels("l1").inc()
    return None


async def l2_get(state: FrontState, key: str, oldest: float | None) -> tuple[str, bytes, float] | None:
    value = await read_l2(state, key, oldest)
    return None if value is None else took_l2(state, key, value)


async def read_l2(state: FrontState, key: str, oldest: float | None) -> bytes | None:
    """The L2 entry as stored, if there is one stored at `oldest` or later; a slow or dead Redis
    is a miss, not an error: the request still gets answered."""
    try:
        value = await state.cache_redis.get(keyspace.cache_entry(key))
    except (TimeoutError, RedisError, OSError):
        metrics.CACHE_ERRORS.inc()
        return None
    if value is None or not fresh(value, oldest):
        metrics.CACHE_MISSES.labels("l2").inc()
        return None
    return value


def took_l2(state: FrontState, key: str, value: bytes) -> tuple[str, bytes, float]:
    """An L2 hit: counted, and kept in L1 for the next one."""
    metrics.CACHE_HITS.labels("l2").inc()
    completion, cost, stored, ttl = split_entry(value)
    metrics.CACHE_SAVINGS.inc(cost)
    state.l1.set(key, completion, cost, stored, l1_ttl_s(stored, ttl))
    return "hit-l2", completion, stored
