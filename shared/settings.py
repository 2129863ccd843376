"""The gateway's process settings: what the environment sets (and, through EDGE_CONFIG's
`general_settings`, the file; shared/config.py reads the file and the model table)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import msgspec

from shared.config_error import ConfigError
from shared.litellm_config import FileSettings
from shared.redis_settings import RedisTarget, cache_redis_from_env, redis_from_env

log = logging.getLogger("edge.config")


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


class Settings(msgspec.Struct, frozen=True):
    host: str = "0.0.0.0"
    port: int = 8080
    redis: RedisTarget = RedisTarget()  # REDIS_URL, or the Sentinel group (shared/redis_settings.py)
    cache_redis: RedisTarget | None = None  # CACHE_REDIS_URL: the L2 cache's own Redis, if any
    master_key: str = ""
    enable_l2_cache: bool = True
    single_flight: bool = True  # identical concurrent misses share one upstream call
    enable_metrics: bool = True
    metrics_port: int = 9100
    request_timeout_s: float = 600.0
    max_body_bytes: int = 10 * 1024 * 1024
    l1_max_entries: int = 1000
    l1_max_bytes: int = 64 * 1024 * 1024
    l1_ttl_s: float = 300.0
    l2_ttl_s: int = 3600
    cache_max_ttl_s: int = 86400  # the longest L2 TTL a request may ask for (s-maxage, ...)
    l2_timeout_s: float = 0.1
    worker_concurrency: int = 512
    upstream_connect_timeout_s: float = 10.0
    # A hostile or broken upstream must not exhaust a worker that runs hundreds of jobs at once.
    max_upstream_body_bytes: int = 64 * 1024 * 1024  # a whole answer, or a whole stream
    max_upstream_line_bytes: int = 8 * 1024 * 1024  # one line (event) of a stream
    # Requests wait this long for a provider's workers to come back, then get a 503.
    no_worker_grace_s: float = 10.0
    # arq's poll of the queue, a fallback only: workers are woken by the wake stream.
    worker_poll_interval_s: float = 0.5
    # The window a virtual key's rpm_limit counts in (seconds; shorter only in tests).
    key_window_s: int = 60
    # One log line per chat request (edge_front/access_log.py), for that fraction of them.
    access_log: bool = False
    access_log_sample: float = 1.0
    # /metrics: open when empty; else it wants this bearer token (or the master key).
    metrics_token: str = ""
    # Distinct `model` label values beyond the configured ones (the rest are `other`).
    metrics_max_models: int = 100
    # On SIGTERM, fronts finish the requests in flight and workers the jobs they hold, this long
    # at most (then they are cut: their jobs run again elsewhere). Below compose's 30 s grace.
    drain_s: int = 25
    # What a virtual key with a tpm limit or budget reserves for an answer without max_tokens.
    reserve_completion_tokens: int = 4096

    @property
    def redis_url(self) -> str:
        return self.redis.url


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The settings the environment gives. Raises ConfigError."""
    settings = Settings(
        host=env.get("HOST", "0.0.0.0"),
        port=env_int(env, "PORT", 8080),
        redis=redis_from_env(env),
        cache_redis=cache_redis_from_env(env),
        master_key=env.get("EDGE_MASTER_KEY", ""),
        enable_l2_cache=env_bool(env, "ENABLE_L2_CACHE", True),
        single_flight=env_bool(env, "EDGE_SINGLE_FLIGHT", True),
        enable_metrics=env_bool(env, "ENABLE_METRICS", True),
        metrics_port=env_int(env, "METRICS_PORT", 9100),
        request_timeout_s=env_float(env, "EDGE_REQUEST_TIMEOUT", 600.0),
        max_body_bytes=env_int(env, "EDGE_MAX_BODY_BYTES", 10 * 1024 * 1024),
        l1_max_entries=env_int(env, "EDGE_L1_MAX_ENTRIES", 1000),
        l1_max_bytes=env_int(env, "EDGE_L1_MAX_BYTES", 64 * 1024 * 1024),
        l1_ttl_s=env_float(env, "EDGE_L1_TTL", 300.0),
        l2_ttl_s=env_int(env, "EDGE_L2_TTL", 3600),
        cache_max_ttl_s=env_int(env, "EDGE_CACHE_MAX_TTL", 86400),
        l2_timeout_s=env_float(env, "EDGE_L2_TIMEOUT", 0.1),
        worker_concurrency=env_int(env, "EDGE_WORKER_CONCURRENCY", 512),
        upstream_connect_timeout_s=env_float(env, "EDGE_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        max_upstream_body_bytes=env_int(env, "EDGE_MAX_UPSTREAM_BODY_BYTES", 64 * 1024 * 1024),
        max_upstream_line_bytes=env_int(env, "EDGE_MAX_UPSTREAM_LINE_BYTES", 8 * 1024 * 1024),
        no_worker_grace_s=env_float(env, "EDGE_NO_WORKER_GRACE", 10.0),
        worker_poll_interval_s=env_float(env, "EDGE_WORKER_POLL_INTERVAL", 0.5),
        key_window_s=env_int(env, "EDGE_KEY_WINDOW_S", 60),
        access_log=env_bool(env, "EDGE_ACCESS_LOG", False),
        access_log_sample=env_float(env, "EDGE_ACCESS_LOG_SAMPLE", 1.0),
        metrics_token=env.get("EDGE_METRICS_TOKEN", ""),
        metrics_max_models=env_int(env, "EDGE_METRICS_MAX_MODELS", 100),
        drain_s=env_int(env, "EDGE_DRAIN_S", 25),
        reserve_completion_tokens=env_int(env, "EDGE_KEY_RESERVE_COMPLETION_TOKENS", 4096),
    )
    if not 0 <= settings.access_log_sample <= 1:
        raise ConfigError("EDGE_ACCESS_LOG_SAMPLE: must be between 0 and 1")
    for name, value in (
        ("EDGE_REQUEST_TIMEOUT", settings.request_timeout_s),
        ("EDGE_MAX_UPSTREAM_BODY_BYTES", settings.max_upstream_body_bytes),
        ("EDGE_MAX_UPSTREAM_LINE_BYTES", settings.max_upstream_line_bytes),
        ("EDGE_WORKER_POLL_INTERVAL", settings.worker_poll_interval_s),
        ("EDGE_KEY_WINDOW_S", settings.key_window_s),
        ("EDGE_KEY_RESERVE_COMPLETION_TOKENS", settings.reserve_completion_tokens),
        ("EDGE_DRAIN_S", settings.drain_s),
        ("EDGE_CACHE_MAX_TTL", settings.cache_max_ttl_s),
    ):
        if value <= 0:
            raise ConfigError(f"{name}: must be positive")
    if settings.no_worker_grace_s < 0:
        raise ConfigError("EDGE_NO_WORKER_GRACE: must not be negative")
    return settings


def with_file_settings(settings: Settings, file: FileSettings, env: Mapping[str, str]) -> Settings:
    """What the file sets, where the matching environment variable is unset (it wins)."""
    changes: dict[str, object] = {}
    for field, variable in (
        ("request_timeout_s", "EDGE_REQUEST_TIMEOUT"),
        ("enable_l2_cache", "ENABLE_L2_CACHE"),
        ("l2_ttl_s", "EDGE_L2_TTL"),
        ("l1_ttl_s", "EDGE_L1_TTL"),
    ):
        value = getattr(file, field)
        if value is not None and not env.get(variable):
            changes[field] = value
    if file.master_key:
        if not settings.master_key:
            changes["master_key"] = file.master_key
        elif settings.master_key != file.master_key:
            log.warning("general_settings.master_key differs from EDGE_MASTER_KEY; EDGE_MASTER_KEY wins")
    return msgspec.structs.replace(settings, **changes)
