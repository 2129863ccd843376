"""Where the gateway's Redis is: one node (REDIS_URL), or a primary that Sentinel names.

REDIS_SENTINELS=host:port,host:port,... with REDIS_SENTINEL_MASTER=<name> makes every process ask
the sentinels for the primary (and again after a failover). REDIS_URL then only says how to talk
to the data nodes: its scheme (rediss:// for TLS), username, password and database apply to
whichever node is primary; its host and port are not used. REDIS_SENTINEL_PASSWORD is the
sentinels' own password (their `requirepass`), when they have one.

Read by shared/config.py (every process's settings) and by the keys CLI, which connects without
reading the rest of the configuration.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import msgspec

from shared.config_error import ConfigError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_SENTINEL_PORT = 26379  # Sentinel's own default, for an entry without a port


class RedisTarget(msgspec.Struct, frozen=True):
    url: str = DEFAULT_REDIS_URL
    sentinels: tuple[tuple[str, int], ...] = ()  # empty: connect to `url` itself
    master: str = ""  # the name the sentinels monitor the primary under
    sentinel_password: str = ""

    @property
    def uses_sentinel(self) -> bool:
        return bool(self.sentinels)

    def describe(self) -> str:
        """For logs and errors: never a password."""
        if self.sentinels:
            nodes = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
            return f"Sentinel master {self.master!r} via {nodes}"
        return _without_password(self.url)

    def __repr__(self) -> str:  # a Settings repr in a log line must not carry the password
        return f"RedisTarget({self.describe()})"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _sentinel_address(entry: str) -> tuple[str, int]:
    """`host`, `host:port` or `[ipv6]:port`; raises ValueError saying what is wrong."""
    if entry.startswith("["):  # IPv6 literal: the port follows the closing bracket
        host, _, rest = entry[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("expected [address]:port")
        port_text = rest[1:]
    elif entry.count(":") == 1:
        host, _, port_text = entry.partition(":")
    elif ":" in entry:
        raise ValueError("an IPv6 address needs brackets: [address]:port")
    else:
        host, port_text = entry, ""
    if not host:
        raise ValueError("no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return host, int(port_text)


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """REDIS_SENTINELS' value; raises ConfigError naming the entry that is wrong."""
    addresses = []
    for entry in text.split(","):
        entry = entry.strip()
        if not entry:
            raise ConfigError(f"REDIS_SENTINELS: empty entry in {text!r} (expected host:port,host:port,...)")
        try:
            addresses.append(_sentinel_address(entry))
        except ValueError as e:
            raise ConfigError(f"REDIS_SENTINELS: {entry!r}: {e}") from None
    if len(set(addresses)) != len(addresses):
        raise ConfigError(f"REDIS_SENTINELS: the same sentinel is listed twice in {text!r}")
    return tuple(addresses)


def redis_from_env(env: Mapping[str, str] | None = None) -> RedisTarget:
    """The Redis every process of this deployment talks to. Raises ConfigError."""
    env = os.environ if env is None else env
    url = env.get("REDIS_URL") or DEFAULT_REDIS_URL
    if not url.startswith(("redis://", "rediss://", "unix://")):
        shown = _without_password(url)
        raise ConfigError(f"REDIS_URL: expected redis://, rediss:// or unix://, got {shown!r}")
    master = env.get("REDIS_SENTINEL_MASTER", "").strip()
    sentinel_password = env.get("REDIS_SENTINEL_PASSWORD", "")
    sentinels_text = env.get("REDIS_SENTINELS", "").strip()
    if not sentinels_text:
        if master or sentinel_password:
            # Silently using REDIS_URL instead would hide a deployment that lost its HA setting.
            raise ConfigError("REDIS_SENTINEL_MASTER / REDIS_SENTINEL_PASSWORD: set without REDIS_SENTINELS")
        return RedisTarget(url=url)
    sentinels = parse_sentinels(sentinels_text)
    if not master:
        raise ConfigError("REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS (the monitored name)")
    if url.startswith("unix://"):
        raise ConfigError("REDIS_URL: a unix:// socket cannot be combined with REDIS_SENTINELS")
    return RedisTarget(url=url, sentinels=sentinels, master=master, sentinel_password=sentinel_password)


def cache_redis_from_env(env: Mapping[str, str] | None = None) -> RedisTarget | None:
    """CACHE_REDIS_URL: a Redis of its own for the L2 cache, which may evict at will
    (shared/redis_memory.py); None: the cache shares the main Redis. One node, never through
    Sentinel: losing it costs cache misses, not requests. Raises ConfigError."""
    env = os.environ if env is None else env
    url = env.get("CACHE_REDIS_URL", "").strip()
    if not url:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"CACHE_REDIS_URL: expected redis://, rediss:// or unix://, got {_without_password(url)!r}"
        )
    return RedisTarget(url=url)
