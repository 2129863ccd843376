"""REDIS_URL / REDIS_SENTINELS parsing (shared/redis_settings.py) and the clients made from them
(shared/redis_connect.py), without a Redis: what each client would connect to, and how."""

from __future__ import annotations

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.config import ConfigError, load_settings
from shared.redis_connect import BlockingSentinelConnectionPool, pooled_client, single_client
from shared.redis_settings import RedisTarget, redis_from_env

SENTINEL_ENV = {"REDIS_SENTINELS": "s1:26379, s2:26380,[::1]:26381,s4", "REDIS_SENTINEL_MASTER": "edge"}


def test_without_sentinels_the_url_is_the_target() -> None:
    target = redis_from_env({"REDIS_URL": "redis://r:6380/2"})
    assert target == RedisTarget(url="redis://r:6380/2")
    assert not target.uses_sentinel
    assert redis_from_env({}).url == "redis://127.0.0.1:6379/0"


def test_sentinel_addresses_are_parsed() -> None:
    target = redis_from_env(SENTINEL_ENV)
    assert target.sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381), ("s4", 26379))
    assert target.master == "edge"
    assert target.uses_sentinel
    settings, _ = load_settings(SENTINEL_ENV)
    assert settings.redis == target


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_SENTINELS": "s1:26379,,s2:1"}, "REDIS_SENTINELS: empty entry"),
        ({"REDIS_SENTINELS": "s1:port"}, "REDIS_SENTINELS: 's1:port': port 'port' is not a number"),
        ({"REDIS_SENTINELS": "s1:0"}, "REDIS_SENTINELS: 's1:0': port '0'"),
        ({"REDIS_SENTINELS": "s1:70000"}, "REDIS_SENTINELS: 's1:70000'"),
        ({"REDIS_SENTINELS": ":26379"}, "REDIS_SENTINELS: ':26379': no host"),
        ({"REDIS_SENTINELS": "::1:26379"}, "an IPv6 address needs brackets"),
        ({"REDIS_SENTINELS": "[::1]x"}, r"expected \[address\]:port"),
        ({"REDIS_SENTINELS": "s1:1,s1:1"}, "listed twice"),
        ({"REDIS_SENTINELS": "s1:1"}, "REDIS_SENTINEL_MASTER: required"),
        ({"REDIS_SENTINEL_MASTER": "edge"}, "set without REDIS_SENTINELS"),
        ({"REDIS_SENTINEL_PASSWORD": "pw"}, "set without REDIS_SENTINELS"),
        ({**SENTINEL_ENV, "REDIS_URL": "unix:///tmp/r.sock"}, "unix:// socket cannot be combined"),
    ],
)
def test_malformed_settings_are_refused_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_passwords_never_appear_in_errors_or_reprs() -> None:
    with pytest.raises(ConfigError) as refused:
        redis_from_env({"REDIS_URL": "http://user:hunter2@r:6379"})
    assert "hunter2" not in str(refused.value)
    assert "user:***@r" in str(refused.value)
    target = redis_from_env(
        {**SENTINEL_ENV, "REDIS_URL": "redis://:hunter2@x/0", "REDIS_SENTINEL_PASSWORD": "pw2"}
    )
    settings, _ = load_settings({"REDIS_URL": "redis://:hunter2@x/0"})
    for text in (repr(target), target.describe(), repr(settings), repr(settings.redis)):
        assert "hunter2" not in text and "pw2" not in text
    assert target.describe() == "Sentinel master 'edge' via s1:26379,s2:26380,[::1]:26381,s4:26379"


async def test_without_sentinels_the_clients_are_plain_url_clients() -> None:
    """No Sentinel machinery (and so no discovery round trip) unless REDIS_SENTINELS is set."""
    target = redis_from_env({"REDIS_URL": "redis://:pw@r:6380/3"})
    client = pooled_client(target, max_connections=24, timeout=0.1, socket_timeout=0.1, client_name="f")
    pool = client.connection_pool
    assert type(pool) is BlockingConnectionPool
    assert (pool.max_connections, pool.timeout) == (24, 0.1)
    assert pool.connection_kwargs["host"] == "r" and pool.connection_kwargs["db"] == 3
    reader = single_client(target, socket_keepalive=True)
    assert type(reader) is Redis and type(reader.connection_pool).__name__ == "ConnectionPool"
    for c in (client, reader):
        await c.aclose()


async def test_with_sentinels_every_client_discovers_the_primary() -> None:
    env = {**SENTINEL_ENV, "REDIS_URL": "rediss://app:pw@ignored:1/4", "REDIS_SENTINEL_PASSWORD": "spw"}
    target = redis_from_env(env)
    client = pooled_client(target, max_connections=24, timeout=0.1, socket_timeout=0.1, client_name="f")
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool) and isinstance(pool, BlockingConnectionPool)
    assert (pool.max_connections, pool.timeout, pool.service_name, pool.is_master) == (24, 0.1, "edge", True)
    # The data nodes' credentials, database and TLS come from REDIS_URL; its host does not.
    kwargs = pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("app", "pw", 4)
    assert "host" not in kwargs and pool.connection_class is SentinelManagedSSLConnection
    manager = pool.sentinel_manager
    assert [s.connection_pool.connection_kwargs["port"] for s in manager.sentinels] == [
        26379,
        26380,
        26381,
        26379,
    ]
    sentinel_kwargs = manager.sentinels[0].connection_pool.connection_kwargs
    assert (sentinel_kwargs["password"], sentinel_kwargs["socket_timeout"]) == ("spw", 0.1)
    reader = single_client(target, socket_connect_timeout=2)
    assert type(reader.connection_pool) is SentinelConnectionPool
    assert "socket_timeout" not in reader.connection_pool.connection_kwargs  # its XREAD blocks
    # ...but asking a sentinel is bounded all the same.
    sentinel_kwargs = reader.connection_pool.sentinel_manager.sentinels[0].connection_pool.connection_kwargs
    assert (sentinel_kwargs["socket_timeout"], sentinel_kwargs["socket_connect_timeout"]) == (2, 2)
    for c in (client, reader):
        await c.aclose()


async def test_the_blocking_sentinel_pool_waits_for_a_free_connection_then_gives_up() -> None:
    """BlockingConnectionPool's behaviour survives the mix-in: a full pool makes the caller wait
    up to `timeout`, then raise, instead of failing at once (or growing past its size)."""
    target = redis_from_env(SENTINEL_ENV)
    client = pooled_client(target, max_connections=1, timeout=0.05)
    pool = client.connection_pool
    taken = pool.get_available_connection()  # the pool's only connection, without connecting it
    with pytest.raises(RedisConnectionError, match="No connection available"):
        await pool.get_connection()
    await pool.release(taken)
    assert pool.can_get_connection()
    await client.aclose()
