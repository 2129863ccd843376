"""Configuration: environment variables (the seed's names) plus an optional YAML model list.

A bad value stops the process at start with one line naming the field (`ConfigError`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from shared.routing import BreakerSettings, RetrySettings, RouterSettings
from shared.wire import validation_error_param

Provider = Literal["openai", "anthropic"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic")

DEFAULT_BASE_URLS: dict[str, str] = {
    # As the official SDKs read them: OpenAI's with /v1, Anthropic's without.
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}
BASE_URL_ENV = {"openai": "OPENAI_BASE_URL", "anthropic": "ANTHROPIC_BASE_URL"}
API_KEY_ENV = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}

# Without a config file, models are routed by name prefix.
DEFAULT_PREFIXES: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-", "o1", "o3", "o4", "chatgpt-"),
    "anthropic": ("claude-",),
}
# What GET /v1/models lists when no config file names the models.
DEFAULT_CATALOG: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest"),
}


# Without a config file: how many model names keep a deployment (and a breaker) of their own.
MAX_ROUTED_MODELS = 256


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the field."""


class Deployment(msgspec.Struct, frozen=True):
    """One upstream a public model name can be served by."""

    model_name: str
    provider: Provider
    model: str
    base_url: str
    api_key_env: str
    weight: float = 1.0
    priority: int = 0
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0
    # Stable name the queue carries instead of a URL: workers resolve it in their own config,
    # so nothing on the queue can point a worker at another host.
    id: str = ""


class _DeploymentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A `model_list` entry as written in the YAML file."""

    model_name: str
    provider: Provider
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    weight: float = 1.0
    priority: int = 0
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0


class _ConfigFile(msgspec.Struct, forbid_unknown_fields=True):
    model_list: list[_DeploymentIn] = []
    router_settings: RouterSettings = RouterSettings()


def _litellm_entry(entry: Any) -> Any:
    """Accept LiteLLM's `litellm_params` form so existing config files work unchanged."""
    if not isinstance(entry, dict) or "litellm_params" not in entry:
        return entry
    params = entry.get("litellm_params") or {}
    out: dict[str, Any] = {k: v for k, v in entry.items() if k not in ("litellm_params", "model_info")}
    provider, _, model = str(params.get("model", "")).partition("/")
    out["provider"] = provider if model else params.get("custom_llm_provider", provider)
    out["model"] = model or provider
    if "api_base" in params:
        out["base_url"] = params["api_base"]
    key = params.get("api_key")
    if isinstance(key, str) and key.startswith("os.environ/"):
        out["api_key_env"] = key.removeprefix("os.environ/")
    elif key is not None:
        raise ConfigError(
            "EDGE_CONFIG: litellm_params.api_key must be 'os.environ/NAME', never the key itself"
        )
    return out


def _field_path(err: msgspec.ValidationError) -> str:
    message, param = validation_error_param(err)
    return f"{param}: {message}" if param else message


def load_config_file(path: str, env: Mapping[str, str]) -> tuple[list[Deployment], RouterSettings]:
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as e:
        raise ConfigError(f"EDGE_CONFIG: cannot read {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"EDGE_CONFIG: {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if isinstance(raw, dict) and isinstance(raw.get("model_list"), list):
        raw["model_list"] = [_litellm_entry(e) for e in raw["model_list"]]
    try:
        parsed = msgspec.convert(raw, _ConfigFile)
    except msgspec.ValidationError as e:
        raise ConfigError(f"EDGE_CONFIG {path}: {_field_path(e)}") from None
    deployments = []
    for i, d in enumerate(parsed.model_list):
        base_url = d.base_url or env.get(BASE_URL_ENV[d.provider]) or DEFAULT_BASE_URLS[d.provider]
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"EDGE_CONFIG {path}: model_list[{i}].base_url must start with http:// or https://"
            )
        deployments.append(
            Deployment(
                model_name=d.model_name,
                provider=d.provider,
                model=d.model or d.model_name,
                base_url=base_url.rstrip("/"),
                api_key_env=d.api_key_env or API_KEY_ENV[d.provider],
                weight=d.weight,
                priority=d.priority,
                input_cost_per_1m=d.input_cost_per_1m,
                output_cost_per_1m=d.output_cost_per_1m,
                id=f"{d.model_name}#{i}",
            )
        )
    unknown = parsed.router_settings.unknown_groups({d.model_name for d in deployments})
    if unknown:
        raise ConfigError(
            f"EDGE_CONFIG {path}: router_settings names unknown model groups: {', '.join(unknown)}"
        )
    return deployments, parsed.router_settings


class ModelTable:
    """Public model name -> deployments. Without a config file, routes by model-name prefix."""

    def __init__(
        self,
        deployments: list[Deployment],
        env: Mapping[str, str],
        by_prefix: bool,
        router: RouterSettings | None = None,
    ) -> None:
        self.router = router or RouterSettings()
        self._exact: dict[str, list[Deployment]] = {}
        self._by_id: dict[str, Deployment] = {}
        for d in deployments:
            self._exact.setdefault(d.model_name, []).append(d)
            self._by_id[d.id] = d
        self._by_prefix = by_prefix
        # Without a config file, each model asked for is a deployment of its own (its own
        # breaker: one model's failures or timeouts must not close a provider's other models),
        # made from its provider's template below; bounded, the least recently used forgotten.
        self._templates: dict[str, Deployment] = {}
        self._routed: OrderedDict[str, Deployment] = OrderedDict()
        if by_prefix:
            for provider in PROVIDERS:
                base_url = (env.get(BASE_URL_ENV[provider]) or DEFAULT_BASE_URLS[provider]).rstrip("/")
                d = Deployment(
                    model_name="*",
                    provider=provider,
                    model="*",
                    base_url=base_url,
                    api_key_env=API_KEY_ENV[provider],
                    id=f"{provider}:*",
                )
                self._templates[provider] = d

    def group(self, model: str) -> list[Deployment]:
        """The deployments serving a public model name (empty if none)."""
        found = self._exact.get(model)
        if found:
            return found
        if self._by_prefix:
            for provider, prefixes in DEFAULT_PREFIXES.items():
                if model.startswith(prefixes):
                    return [self._routed_model(provider, model)]
        return []

    def _routed_model(self, provider: str, model: str) -> Deployment:
        deployment_id = f"{provider}:{model}"
        d = self._routed.get(deployment_id)
        if d is None:
            d = msgspec.structs.replace(
                self._templates[provider], model_name=model, model=model, id=deployment_id
            )
            self._routed[deployment_id] = d
            if len(self._routed) > MAX_ROUTED_MODELS:
                self._routed.popitem(last=False)
        else:
            self._routed.move_to_end(deployment_id)
        return d

    def by_id(self, deployment_id: str) -> Deployment | None:
        found = self._by_id.get(deployment_id) or self._routed.get(deployment_id)
        if found is None and self._by_prefix:
            provider, _, model = deployment_id.partition(":")
            if provider in self._templates and model.startswith(DEFAULT_PREFIXES[provider]):
                return self._routed_model(provider, model)
        return found

    def deployments(self) -> list[Deployment]:
        """Every deployment requests are routed to (without a config file: the models asked for
        recently, each with its own breaker)."""
        return [*self._by_id.values(), *self._routed.values()]

    def key_variables(self) -> set[str]:
        """The environment variables holding the deployments' API keys."""
        return {d.api_key_env for d in (*self._by_id.values(), *self._templates.values())}

    def public_models(self) -> list[tuple[str, str]]:
        """(model name, provider) pairs to list in GET /v1/models."""
        if self._exact:
            return [(name, ds[0].provider) for name, ds in self._exact.items()]
        return [(m, p) for p, models in DEFAULT_CATALOG.items() for m in models]

    def providers(self) -> set[str]:
        if self._exact:
            return {ds[0].provider for ds in self._exact.values()}
        return set(PROVIDERS)


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None


def _env_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = env.get(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
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
    redis_url: str = "redis://127.0.0.1:6379/0"
    master_key: str = ""
    enable_l2_cache: bool = True
    enable_metrics: bool = True
    metrics_port: int = 9100
    request_timeout_s: float = 600.0
    max_body_bytes: int = 10 * 1024 * 1024
    l1_max_entries: int = 1000
    l1_max_bytes: int = 64 * 1024 * 1024
    l1_ttl_s: float = 300.0
    l2_ttl_s: int = 3600
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


def _router_from_env(env: Mapping[str, str]) -> RouterSettings:
    """Without a config file, the retry and breaker limits can still be set from the environment."""
    retry, breaker = RetrySettings(), BreakerSettings()
    values = {
        "retry": {"max_attempts": _env_int(env, "EDGE_MAX_ATTEMPTS", retry.max_attempts)},
        "breaker": {
            "failures": _env_int(env, "EDGE_BREAKER_FAILURES", breaker.failures),
            "cooldown_s": _env_float(env, "EDGE_BREAKER_COOLDOWN", breaker.cooldown_s),
        },
    }
    try:
        return msgspec.convert(values, RouterSettings)  # validated like the file's section
    except msgspec.ValidationError as e:
        raise ConfigError(f"EDGE_MAX_ATTEMPTS / EDGE_BREAKER_*: {_field_path(e)}") from None


def load_settings(env: Mapping[str, str] | None = None) -> tuple[Settings, ModelTable]:
    """Read the environment (and EDGE_CONFIG's YAML if set). Raises ConfigError."""
    env = os.environ if env is None else env
    settings = Settings(
        host=env.get("HOST", "0.0.0.0"),
        port=_env_int(env, "PORT", 8080),
        redis_url=env.get("REDIS_URL") or "redis://127.0.0.1:6379/0",
        master_key=env.get("EDGE_MASTER_KEY", ""),
        enable_l2_cache=_env_bool(env, "ENABLE_L2_CACHE", True),
        enable_metrics=_env_bool(env, "ENABLE_METRICS", True),
        metrics_port=_env_int(env, "METRICS_PORT", 9100),
        request_timeout_s=_env_float(env, "EDGE_REQUEST_TIMEOUT", 600.0),
        max_body_bytes=_env_int(env, "EDGE_MAX_BODY_BYTES", 10 * 1024 * 1024),
        l1_max_entries=_env_int(env, "EDGE_L1_MAX_ENTRIES", 1000),
        l1_max_bytes=_env_int(env, "EDGE_L1_MAX_BYTES", 64 * 1024 * 1024),
        l1_ttl_s=_env_float(env, "EDGE_L1_TTL", 300.0),
        l2_ttl_s=_env_int(env, "EDGE_L2_TTL", 3600),
        l2_timeout_s=_env_float(env, "EDGE_L2_TIMEOUT", 0.1),
        worker_concurrency=_env_int(env, "EDGE_WORKER_CONCURRENCY", 512),
        upstream_connect_timeout_s=_env_float(env, "EDGE_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        max_upstream_body_bytes=_env_int(env, "EDGE_MAX_UPSTREAM_BODY_BYTES", 64 * 1024 * 1024),
        max_upstream_line_bytes=_env_int(env, "EDGE_MAX_UPSTREAM_LINE_BYTES", 8 * 1024 * 1024),
        no_worker_grace_s=_env_float(env, "EDGE_NO_WORKER_GRACE", 10.0),
        worker_poll_interval_s=_env_float(env, "EDGE_WORKER_POLL_INTERVAL", 0.5),
    )
    for name, value in (
        ("EDGE_REQUEST_TIMEOUT", settings.request_timeout_s),
        ("EDGE_MAX_UPSTREAM_BODY_BYTES", settings.max_upstream_body_bytes),
        ("EDGE_MAX_UPSTREAM_LINE_BYTES", settings.max_upstream_line_bytes),
        ("EDGE_WORKER_POLL_INTERVAL", settings.worker_poll_interval_s),
    ):
        if value <= 0:
            raise ConfigError(f"{name}: must be positive")
    if settings.no_worker_grace_s < 0:
        raise ConfigError("EDGE_NO_WORKER_GRACE: must not be negative")
    if not settings.redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"REDIS_URL: expected redis://, rediss:// or unix://, got {settings.redis_url!r}")
    config_path = env.get("EDGE_CONFIG")
    if config_path:
        deployments, router = load_config_file(config_path, env)
        table = ModelTable(deployments, env, by_prefix=False, router=router)
    else:
        table = ModelTable([], env, by_prefix=True, router=_router_from_env(env))
    return settings, table
