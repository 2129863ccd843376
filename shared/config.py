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
from shared.deployments import (
    API_KEY_ENV,
    BASE_URL_ENV,
    BEDROCK_OPT_IN,
    DEFAULT_BASE_URLS,
    DEFAULT_CATALOG,
    DEFAULT_PREFIXES,
    MAX_ROUTED_MODELS,
    PROVIDERS,
    Deployment,
    MaxTokensField,
    PerMinute,
    Provider,
    Seconds,
    bedrock_region,
    default_base_url,
)
from shared.litellm_config import FileSettings, convert, translate
from shared.routing import BreakerSettings, RetrySettings, RouterSettings
from shared.semantic_config import Mode, SemanticSettings, group_settings
from shared.settings import Settings, env_bool, env_float, env_int, settings_from_env, with_file_settings
from shared.wire import validation_error_param

log = logging.getLogger("edge.config")


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


def _field_path(err: msgspec.ValidationError) -> str:
    message, param = validation_error_param(err)
    return f"{param}: {message}" if param else message


def _router_from_env(env: Mapping[str, str]) -> RouterSettings:
    """Without a config file, the retry and breaker limits can still be set from the environment."""
    retry, breaker = RetrySettings(), BreakerSettings()
    values = {
        "retry": {"max_attempts": env_int(env, "EDGE_MAX_ATTEMPTS", retry.max_attempts)},
        "breaker": {
            "failures": env_int(env, "EDGE_BREAKER_FAILURES", breaker.failures),
            "cooldown_s": env_float(env, "EDGE_BREAKER_COOLDOWN", breaker.cooldown_s),
        },
    }
    try:
        return msgspec.convert(values, RouterSettings)  # validated like the file's section
    except msgspec.ValidationError as e:
        raise ConfigError(f"EDGE_MAX_ATTEMPTS / EDGE_BREAKER_*: {_field_path(e)}") from None


def load_settings(env: Mapping[str, str] | None = None) -> tuple[Settings, ModelTable]:
    """Read the environment (and EDGE_CONFIG's YAML if set). Raises ConfigError."""
    env = os.environ if env is None else env
    settings = settings_from_env(env)
    config_path = env.get("EDGE_CONFIG")
    if not config_path:
        return settings, ModelTable([], env, by_prefix=True, router=_router_from_env(env))
    loaded = read_config(config_path, env)
    if loaded.warnings:
        if env_bool(env, "EDGE_CONFIG_STRICT", False):
            raise ConfigError(f"EDGE_CONFIG {config_path}: refused (strict): {'; '.join(loaded.warnings)}")
        line = f"EDGE_CONFIG {config_path}: {'; '.join(loaded.warnings)}"
        if line not in _warned:  # once per process, however often the settings are read
            _warned.add(line)
            log.warning("%s", line)
    if isinstance(env, os._Environ):
        # The file's environment_variables fill gaps only: the real environment always wins.
        for variable, text in loaded.settings.environment.items():
            env.setdefault(variable, text)
    settings = with_file_settings(settings, loaded.settings, env)
    return settings, ModelTable(loaded.deployments, env, by_prefix=False, router=loaded.router)


_warned: set[str] = set()
