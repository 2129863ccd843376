"""Configuration: environment variables (the seed's names) plus an optional YAML model list.

A bad value stops the process at start with one line naming the field (`ConfigError`).
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Annotated, Literal, get_args

import msgspec

from shared.aws_config import AwsCredentials, bedrock_endpoint
from shared.cache_policy import CacheMode, CachePolicy
from shared.config_error import ConfigError
from shared.config_source import Path, PathError, Source, SourceError, dotted
from shared.litellm_config import FileSettings, convert, translate
from shared.redis_settings import RedisTarget, cache_redis_from_env, redis_from_env
from shared.routing import BreakerSettings, RetrySettings, RouterSettings
from shared.semantic_config import Mode, SemanticSettings, group_settings
from shared.wire import validation_error_param

Provider = Literal["openai", "anthropic", "gemini", "azure", "bedrock"]
PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic", "gemini", "azure", "bedrock")

DEFAULT_BASE_URLS: dict[str, str] = {
    # As the official SDKs read them: OpenAI's with /v1, Anthropic's without, Gemini's with its
    # API version. Azure has none: each resource has its own (https://<resource>.openai.azure.com).
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
    "azure": "",
    "bedrock": "",  # https://bedrock-runtime.<AWS_REGION>.amazonaws.com (default_base_url)
}
BASE_URL_ENV = {
    "openai": "OPENAI_BASE_URL",
    "anthropic": "ANTHROPIC_BASE_URL",
    "gemini": "GEMINI_BASE_URL",
    "azure": "AZURE_OPENAI_ENDPOINT",
    "bedrock": "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",  # the AWS SDKs' own per-service override
}
API_KEY_ENV = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "azure": "AZURE_OPENAI_API_KEY",
    # Bedrock signs with AWS credentials, not a key: the variable workers report missing.
    "bedrock": "AWS_ACCESS_KEY_ID",
}


def default_base_url(provider: str, env: Mapping[str, str]) -> str:
    """A provider's URL when neither the entry nor its *_BASE_URL variable gives one (Bedrock's
    is its region's runtime endpoint; "" when nothing says which)."""
    if provider == "bedrock":
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return f"https://bedrock-runtime.{region}.amazonaws.com" if region else ""
    return DEFAULT_BASE_URLS[provider]


# Without a config file, models are routed by name prefix (Azure serves deployments a config
# file names, so no name routes to it; Bedrock's as `bedrock/<model id>`, LiteLLM's spelling,
# and only when EDGE_BEDROCK_REGION names the region to serve them from).
BEDROCK_OPT_IN = "EDGE_BEDROCK_REGION"
DEFAULT_PREFIXES: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-", "o1", "o3", "o4", "chatgpt-", "text-embedding-"),
    "anthropic": ("claude-",),
    "gemini": ("gemini-",),
    "bedrock": ("bedrock/",),
}
# What GET /v1/models lists when no config file names the models.
DEFAULT_CATALOG: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3", "o4-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest"),
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.0-flash"),
    "bedrock": ("bedrock/amazon.nova-lite-v1:0", "bedrock/us.anthropic.claude-3-5-haiku-20241022-v1:0"),
}
# An OpenAI-compatible server's quirks (README "Providers"): which name it reads the answer
# limit under, and whether it takes `stream_options` (without it, streams may carry no usage).
MaxTokensField = Literal["max_tokens", "max_completion_tokens"]


def bedrock_region(region: str | None, env: Mapping[str, str]) -> str:
    """A Bedrock deployment's region: its own, else the AWS SDKs' variables ("" if none)."""
    return region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or ""


# Without a config file: how many model names keep a deployment (and a breaker) of their own.
MAX_ROUTED_MODELS = 256

log = logging.getLogger("edge.config")


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
    rpm: int | None = None  # requests per minute, cluster-wide (edge_front/deployment_limits.py)
    tpm: int | None = None  # tokens per minute, cluster-wide
    timeout_s: float | None = None  # bounds one upstream call (the request's deadline too)
    stream_timeout_s: float | None = None  # ... of a streamed call, instead of timeout_s
    api_key: str = ""  # written in the file itself (LiteLLM allows it); wins over api_key_env
    cache: CachePolicy | None = None  # its model group's cache policy (shared/cache_policy.py)
    api_version: str | None = None  # Azure: the api-version query, or "v1" for /openai/v1
    auth: Literal["api-key", "bearer"] | None = None  # Azure: its api-key header or a bearer token
    stream_options: bool = True  # OpenAI-compatible: send stream_options.include_usage
    max_tokens_field: MaxTokensField | None = None  # OpenAI-compatible: rename the answer limit
    region: str = ""  # bedrock: the AWS region it signs for
    aws: AwsCredentials | None = None  # bedrock: credentials of its own (else the default chain)
    semantic_cache: SemanticSettings | None = None  # for its whole group (shared/semantic_config.py)

    def __repr__(self) -> str:  # never a key in a log line
        return f"Deployment({self.id!r}, {self.provider}, {self.model!r}, {self.base_url!r})"


PerMinute = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]


class _DeploymentIn(msgspec.Struct, forbid_unknown_fields=True):
    """A `model_list` entry in the gateway's own form (LiteLLM's is translated into it)."""

    model_name: str
    provider: Provider
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    weight: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    priority: int = 0
    input_cost_per_1m: float = 0.0
    output_cost_per_1m: float = 0.0
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    timeout_s: Seconds | None = None
    stream_timeout_s: Seconds | None = None
    api_key: str | None = None
    cache: CachePolicy | None = None
    api_version: str | None = None
    auth: Literal["api-key", "bearer"] | None = None
    stream_options: bool = True
    max_tokens_field: MaxTokensField | None = None
    region: str | None = None  # bedrock only
    aws: AwsCredentials | None = None  # bedrock only
    semantic_cache: SemanticSettings | None = None


class LoadedConfig(msgspec.Struct, frozen=True):
    deployments: list[Deployment]
    router: RouterSettings
    settings: FileSettings
    warnings: list[str]  # ignored keys and skipped models, by path


# Where a refused value names an enum, the refusal lists the valid values.
# (By the field's name, or its section's and its own: two sections have a `mode`.)
_ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "provider": PROVIDERS,
    "semantic_cache.mode": get_args(Mode),
    "cache.mode": get_args(CacheMode),
}


def _refusal(source: Source, path: Path, message: str) -> ConfigError:
    named = ".".join(str(part) for part in path[-2:])
    valid = _ENUM_VALUES.get(named) or _ENUM_VALUES.get(str(path[-1])) if path else None
    if valid and message.startswith("Invalid enum value"):
        message += f"; valid: {', '.join(valid)}"
    return ConfigError(f"EDGE_CONFIG {source.where(path)}: {dotted(path)}: {message}")


def read_config(path: str, env: Mapping[str, str]) -> LoadedConfig:
    """The file at `path` (LiteLLM's form, the gateway's, or both). Raises ConfigError."""
    try:
        source = Source.read(path)
    except SourceError as e:
        raise ConfigError(f"EDGE_CONFIG: {e}") from None
    try:
        translated = translate(source.data, env)
        entries = [(i, convert(raw, _DeploymentIn, ("model_list", i))) for i, raw in translated.model_list]
        router = convert(translated.router_settings, RouterSettings, ("router_settings",))
    except PathError as e:
        raise _refusal(source, e.path, e.message) from None
    lookup = {**translated.settings.environment, **env}  # the real environment wins
    deployments = []
    for i, d in entries:
        region = ""
        if d.provider == "bedrock":
            region = bedrock_region(d.region, lookup)
            if not region:
                message = "region: not set, and neither is AWS_REGION nor AWS_DEFAULT_REGION"
                raise _refusal(source, ("model_list", i), message)
        elif d.region is not None or d.aws is not None:
            field = "region" if d.region is not None else "aws"
            raise _refusal(source, ("model_list", i, field), "only bedrock deployments take it")
        default_url = bedrock_endpoint(region) if region else default_base_url(d.provider, lookup)
        base_url = d.base_url or lookup.get(BASE_URL_ENV[d.provider]) or default_url
        if not base_url.startswith(("http://", "https://")):
            why = "base_url must start with http:// or https://"
            if d.provider == "azure" and not base_url:
                why = "azure needs a base_url (https://<resource>.openai.azure.com) or AZURE_OPENAI_ENDPOINT"
            if d.provider == "bedrock" and not base_url:
                why = "bedrock needs a base_url, AWS_ENDPOINT_URL_BEDROCK_RUNTIME or AWS_REGION"
            raise _refusal(source, ("model_list", i), why)
        deployments.append(
            Deployment(
                model_name=d.model_name,
                provider=d.provider,
                model=d.model or d.model_name,
                base_url=base_url.rstrip("/"),
                api_key_env=d.api_key_env
                or (d.aws.access_key_id_env if d.aws else "")
                or API_KEY_ENV[d.provider],
                weight=d.weight,
                priority=d.priority,
                input_cost_per_1m=d.input_cost_per_1m,
                output_cost_per_1m=d.output_cost_per_1m,
                id=f"{d.model_name}#{i}",
                rpm=d.rpm,
                tpm=d.tpm,
                timeout_s=d.timeout_s,
                stream_timeout_s=d.stream_timeout_s,
                api_key=d.api_key or "",
                cache=d.cache,
                api_version=d.api_version,
                auth=d.auth,
                stream_options=d.stream_options,
                max_tokens_field=d.max_tokens_field,
                region=region,
                aws=d.aws,
                semantic_cache=d.semantic_cache,
            )
        )
    policies: dict[str, CachePolicy] = {}
    for i, d in entries:
        if d.cache is not None and policies.setdefault(d.model_name, d.cache) != d.cache:
            raise _refusal(source, ("model_list", i, "cache"), "differs from its model group's earlier entry")
    unknown = router.unknown_groups({d.model_name for d in deployments})
    if unknown:
        raise _refusal(source, ("router_settings",), f"names unknown model groups: {', '.join(unknown)}")
    try:
        group_settings(deployments, router.semantic_cache)
    except ValueError as e:
        raise _refusal(source, ("model_list",), str(e)) from None
    return LoadedConfig(deployments, router, translated.settings, translated.warnings)


def load_config_file(path: str, env: Mapping[str, str]) -> tuple[list[Deployment], RouterSettings]:
    loaded = read_config(path, env)
    return loaded.deployments, loaded.router


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
        self._policies: dict[str, CachePolicy] = {}
        for d in deployments:
            self._exact.setdefault(d.model_name, []).append(d)
            self._by_id[d.id] = d
            if d.cache is not None:
                self._policies.setdefault(d.model_name, d.cache)
        self._by_prefix = by_prefix
        # Model group -> its semantic cache settings; empty (the default): the cache is off.
        self.semantic = group_settings(deployments, self.router.semantic_cache)
        # Without a config file, each model asked for is a deployment of its own (its own
        # breaker: one model's failures or timeouts must not close a provider's other models),
        # made from its provider's template below; bounded, the least recently used forgotten.
        self._templates: dict[str, Deployment] = {}
        self._routed: OrderedDict[str, Deployment] = OrderedDict()
        if by_prefix:
            for provider in PROVIDERS:
                # Bedrock only when asked for: AWS_REGION alone is set on every ECS task and
                # Lambda, and a provider without workers would leave /health degraded there.
                region = env.get(BEDROCK_OPT_IN, "") if provider == "bedrock" else ""
                if provider == "bedrock" and not region:
                    continue
                default_url = bedrock_endpoint(region) if region else DEFAULT_BASE_URLS[provider]
                base_url = (env.get(BASE_URL_ENV[provider]) or default_url).rstrip("/")
                d = Deployment(
                    model_name="*",
                    provider=provider,
                    model="*",
                    base_url=base_url,
                    api_key_env=API_KEY_ENV[provider],
                    id=f"{provider}:*",
                    region=region,
                )
                self._templates[provider] = d

    def group(self, model: str) -> list[Deployment]:
        """The deployments serving a public model name (empty if none)."""
        found = self._exact.get(model)
        if found:
            return found
        if self._by_prefix:
            for provider, prefixes in DEFAULT_PREFIXES.items():
                if provider in self._templates and model.startswith(prefixes):
                    return [self._routed_model(provider, model)]
        return []

    def cache_policy(self, model: str) -> CachePolicy:
        """The model group's cache policy, else router_settings' default."""
        return self._policies.get(model, self.router.cache)

    def _routed_model(self, provider: str, model: str) -> Deployment:
        deployment_id = f"{provider}:{model}"
        d = self._routed.get(deployment_id)
        if d is None:
            upstream = model.removeprefix("bedrock/") if provider == "bedrock" else model
            d = msgspec.structs.replace(
                self._templates[provider], model_name=model, model=upstream, id=deployment_id
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
            if provider in self._templates and model.startswith(DEFAULT_PREFIXES.get(provider, ())):
                return self._routed_model(provider, model)
        return found

    def deployments(self) -> list[Deployment]:
        """Every deployment requests are routed to (without a config file: the models asked for
        recently, each with its own breaker)."""
        return [*self._by_id.values(), *self._routed.values()]

    def templates(self) -> list[Deployment]:
        """Without a config file, each provider's template deployment (none with one)."""
        return list(self._templates.values())

    def key_variables(self, provider: str | None = None) -> set[str]:
        """The environment variables holding the deployments' API keys (of one provider's)."""
        deployments = (*self._by_id.values(), *self._templates.values())
        return {
            d.api_key_env
            for d in deployments
            # Bedrock's credentials are found by botocore's chain, not read from one variable.
            if not d.api_key and d.provider != "bedrock" and provider in (None, d.provider)
        }

    def public_models(self) -> list[tuple[str, str]]:
        """(model name, provider) pairs to list in GET /v1/models."""
        if self._exact:
            return [(name, ds[0].provider) for name, ds in self._exact.items()]
        return [(m, p) for p, models in DEFAULT_CATALOG.items() if p in self._templates for m in models]

    def providers(self) -> set[str]:
        if self._exact:
            return {ds[0].provider for ds in self._exact.values()}
        # the providers a model name can be routed to (Bedrock only with EDGE_BEDROCK_REGION)
        return {p for p in DEFAULT_PREFIXES if p in self._templates}


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


def _field_path(err: msgspec.ValidationError) -> str:
    message, param = validation_error_param(err)
    return f"{param}: {message}" if param else message


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
        redis=redis_from_env(env),
        cache_redis=cache_redis_from_env(env),
        master_key=env.get("EDGE_MASTER_KEY", ""),
        enable_l2_cache=_env_bool(env, "ENABLE_L2_CACHE", True),
        single_flight=_env_bool(env, "EDGE_SINGLE_FLIGHT", True),
        enable_metrics=_env_bool(env, "ENABLE_METRICS", True),
        metrics_port=_env_int(env, "METRICS_PORT", 9100),
        request_timeout_s=_env_float(env, "EDGE_REQUEST_TIMEOUT", 600.0),
        max_body_bytes=_env_int(env, "EDGE_MAX_BODY_BYTES", 10 * 1024 * 1024),
        l1_max_entries=_env_int(env, "EDGE_L1_MAX_ENTRIES", 1000),
        l1_max_bytes=_env_int(env, "EDGE_L1_MAX_BYTES", 64 * 1024 * 1024),
        l1_ttl_s=_env_float(env, "EDGE_L1_TTL", 300.0),
        l2_ttl_s=_env_int(env, "EDGE_L2_TTL", 3600),
        cache_max_ttl_s=_env_int(env, "EDGE_CACHE_MAX_TTL", 86400),
        l2_timeout_s=_env_float(env, "EDGE_L2_TIMEOUT", 0.1),
        worker_concurrency=_env_int(env, "EDGE_WORKER_CONCURRENCY", 512),
        upstream_connect_timeout_s=_env_float(env, "EDGE_UPSTREAM_CONNECT_TIMEOUT", 10.0),
        max_upstream_body_bytes=_env_int(env, "EDGE_MAX_UPSTREAM_BODY_BYTES", 64 * 1024 * 1024),
        max_upstream_line_bytes=_env_int(env, "EDGE_MAX_UPSTREAM_LINE_BYTES", 8 * 1024 * 1024),
        no_worker_grace_s=_env_float(env, "EDGE_NO_WORKER_GRACE", 10.0),
        worker_poll_interval_s=_env_float(env, "EDGE_WORKER_POLL_INTERVAL", 0.5),
        key_window_s=_env_int(env, "EDGE_KEY_WINDOW_S", 60),
        access_log=_env_bool(env, "EDGE_ACCESS_LOG", False),
        access_log_sample=_env_float(env, "EDGE_ACCESS_LOG_SAMPLE", 1.0),
        metrics_token=env.get("EDGE_METRICS_TOKEN", ""),
        metrics_max_models=_env_int(env, "EDGE_METRICS_MAX_MODELS", 100),
        drain_s=_env_int(env, "EDGE_DRAIN_S", 25),
        reserve_completion_tokens=_env_int(env, "EDGE_KEY_RESERVE_COMPLETION_TOKENS", 4096),
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
    config_path = env.get("EDGE_CONFIG")
    if not config_path:
        return settings, ModelTable([], env, by_prefix=True, router=_router_from_env(env))
    loaded = read_config(config_path, env)
    if loaded.warnings:
        if _env_bool(env, "EDGE_CONFIG_STRICT", False):
            raise ConfigError(f"EDGE_CONFIG {config_path}: refused (strict): {'; '.join(loaded.warnings)}")
        line = f"EDGE_CONFIG {config_path}: {'; '.join(loaded.warnings)}"
        if line not in _warned:  # once per process, however often the settings are read
            _warned.add(line)
            log.warning("%s", line)
    if isinstance(env, os._Environ):
        # The file's environment_variables fill gaps only: the real environment always wins.
        for variable, text in loaded.settings.environment.items():
            env.setdefault(variable, text)
    settings = _with_file_settings(settings, loaded.settings, env)
    return settings, ModelTable(loaded.deployments, env, by_prefix=False, router=loaded.router)


_warned: set[str] = set()


def _with_file_settings(settings: Settings, file: FileSettings, env: Mapping[str, str]) -> Settings:
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
