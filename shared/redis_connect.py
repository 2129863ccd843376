"""Every Redis client the gateway makes, made here: fronts, workers and the keys CLI.

With REDIS_URL alone these are exactly the clients each place made before (same pools, same
options, no extra round trip). With REDIS_SENTINELS (shared/redis_settings.py) each client's
pool asks a sentinel for the primary's address whenever it opens a connection, so after a
failover the next connection goes to the new primary:
- a connection to the old primary fails (reset, timeout); redis-py drops it and the caller sees
  a ConnectionError, which every caller already treats as "Redis unavailable, try again";
- while the sentinels still judge the old primary down and have not promoted a replica, opening
  a connection fails the same way (MasterNotFoundError is a ConnectionError);
- a connection still open to a demoted primary gets READONLY on a write; redis-py turns that
  into a ConnectionError and rediscovers.
Asking a sentinel costs one round trip per new connection, never one per command: the pools
keep their connections as before.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import RedisError

from shared.redis_settings import RedisTarget

log = logging.getLogger("edge.redis")


class BlockingSentinelConnectionPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel discovery with BlockingConnectionPool's bounded wait for a free connection.

    redis-py 5.3 has no such class. The MRO puts SentinelConnectionPool's discovery (its
    connection class and `get_master_address`) in front of BlockingConnectionPool's
    `get_connection`/`release` (wait up to `timeout` when all `max_connections` are in use,
    instead of failing at once); neither overrides what the other relies on.
    """


async def _close_sentinels(pool: Any) -> None:
    """The Sentinel object behind a client was made for that client alone (see `_sentinel`), and
    redis-py's `aclose` closes only the data connections: close the sentinel connections too."""
    for sentinel in pool.sentinel_manager.sentinels:
        await sentinel.aclose()


class SentinelRedis(Redis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await _close_sentinels(self.connection_pool)


class SentinelArqRedis(ArqRedis):
    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await _close_sentinels(self.connection_pool)


def _node_options(target: RedisTarget) -> dict[str, Any]:
    """What REDIS_URL says about the data nodes besides their address (which Sentinel gives):
    credentials, database, TLS and any query options."""
    options: dict[str, Any] = dict(parse_url(target.url))
    options.pop("host", None)
    options.pop("port", None)
    if options.pop("connection_class", None) is SSLConnection:
        options["ssl"] = True  # SentinelConnectionPool picks its TLS connection class from this
    return options


def _sentinel(target: RedisTarget, socket_timeout: float | None, connect_timeout: float | None) -> Sentinel:
    """A Sentinel manager for one client. Each client gets its own, with its own role's timeouts:
    finding the primary for an L2 read must fail as fast as the read itself would."""
    sentinel_options: dict[str, Any] = {
        # A sentinel answers at once or not at all: bound its replies even for a client whose own
        # commands may block for long (the reply reader's XREAD, the worker's), and so has none.
        "socket_timeout": socket_timeout or connect_timeout,
        "socket_connect_timeout": connect_timeout,
    }
    if target.sentinel_password:
        sentinel_options["password"] = target.sentinel_password
    return Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_options)


def _master_for(
    target: RedisTarget, redis_class: type[Redis], pool_class: type[SentinelConnectionPool], **options: Any
) -> Any:
    manager = _sentinel(target, options.get("socket_timeout"), options.get("socket_connect_timeout"))
    # As with from_url, what REDIS_URL says (its query string too) wins over the caller's options.
    merged = {**options, **_node_options(target)}
    return manager.master_for(
        target.master, redis_class=redis_class, connection_pool_class=pool_class, **merged
    )


def pooled_client(target: RedisTarget, *, max_connections: int, timeout: float, **options: Any) -> Redis:
    """A client over a pool of at most `max_connections`; a command waits up to `timeout` for a
    free connection (then ConnectionError). `options` are redis-py connection options."""
    if not target.uses_sentinel:
        pool = BlockingConnectionPool.from_url(
            target.url, max_connections=max_connections, timeout=timeout, **options
        )
        return Redis(connection_pool=pool)
    client: Redis = _master_for(
        target,
        SentinelRedis,
        BlockingSentinelConnectionPool,
        max_connections=max_connections,
        timeout=timeout,
        **options,
    )
    return client


def single_client(target: RedisTarget, **options: Any) -> Redis:
    """A client for one task at a time (a dedicated reader, a command-line tool)."""
    if not target.uses_sentinel:
        return Redis.from_url(target.url, **options)
    client: Redis = _master_for(target, SentinelRedis, SentinelConnectionPool, **options)
    return client


async def arq_pool(target: RedisTarget, **arq_options: Any) -> ArqRedis:
    """The worker's pool, as arq's `create_pool` makes it: the first PING retried (a worker may
    start before Redis), `arq_options` (serializers, queue name) set on it.

    arq's own Sentinel mode (`RedisSettings(sentinel=True)`) is not used: arq 0.28 passes the
    sentinels no timeouts (a sentinel host that does not answer blocks discovery for the OS's
    TCP timeout) and no password, so sentinels with `requirepass` could not be reached.
    """
    defaults = RedisSettings()
    if not target.uses_sentinel:
        return await create_pool(RedisSettings.from_dsn(target.url), **arq_options)
    pool: ArqRedis = _master_for(
        target,
        SentinelArqRedis,
        SentinelConnectionPool,
        socket_connect_timeout=defaults.conn_timeout,
        encoding="utf8",
    )
    for name, value in arq_options.items():  # the attributes create_pool sets, by the same names
        setattr(pool, name, value)
    for attempt in range(defaults.conn_retries + 1):
        try:
            await pool.ping()
            return pool
        except (TimeoutError, RedisError, OSError) as e:
            if attempt == defaults.conn_retries:
                await pool.aclose()
                raise
            log.warning(
                "Redis (%s) unreachable (%s); %d retries left",
                target.describe(),
                type(e).__name__,
                defaults.conn_retries - attempt,
            )
            await asyncio.sleep(defaults.conn_retry_delay)
    raise AssertionError("unreachable")
