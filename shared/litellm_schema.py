"""The shapes of a LiteLLM proxy config file's sections, as LiteLLM documents them (only the keys
the gateway honours; the translator reports every other key as ignored)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from shared.cache_policy import CachePolicy

Count = Annotated[int, msgspec.Meta(ge=0)]
PerMinute = Annotated[int, msgspec.Meta(ge=1)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
# LiteLLM writes fallbacks as a list of one-key dicts; this gateway's form is one dict.
Fallbacks = list[dict[str, list[str]]] | dict[str, list[str]]


class LiteLLMParams(msgspec.Struct, frozen=True):
    model: str
    api_key: str | None = None
    api_base: str | None = None
    base_url: str | None = None  # LiteLLM's alias of api_base
    custom_llm_provider: str | None = None
    api_version: str | None = None
    azure_ad_token: str | None = None  # azure: a bearer token instead of an api-key
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    timeout: Seconds | None = None
    stream_timeout: Seconds | None = None
    max_retries: Count | None = None
    order: int | None = None
    weight: NonNegative | None = None
    input_cost_per_token: NonNegative | None = None
    output_cost_per_token: NonNegative | None = None
    # bedrock/ (LiteLLM's names); the secrets usually as os.environ/NAME references
    aws_region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    aws_profile_name: str | None = None
    aws_bedrock_runtime_endpoint: str | None = None


class ModelInfo(msgspec.Struct, frozen=True):
    """Only the costs change behaviour (lowest-cost routing); the rest is LiteLLM's metadata."""

    input_cost_per_token: NonNegative | None = None
    output_cost_per_token: NonNegative | None = None


class ModelEntry(msgspec.Struct, frozen=True):
    model_name: str
    litellm_params: LiteLLMParams
    model_info: ModelInfo = ModelInfo()
    rpm: PerMinute | None = None
    tpm: PerMinute | None = None
    cache: CachePolicy | None = None  # the gateway's own: its model group's cache policy
    semantic_cache: Any = None  # the gateway's own setting, passed through (shared/semantic_config.py)


class RouterIn(msgspec.Struct, frozen=True):
    """LiteLLM's `router_settings` names; the gateway's own (retry, breaker, ...) pass through."""

    routing_strategy: str | None = None
    group_strategies: dict[str, str] = {}
    num_retries: Count | None = None
    timeout: Seconds | None = None
    fallbacks: Fallbacks | None = None
    context_window_fallbacks: Fallbacks | None = None
    allowed_fails: Count | None = None
    cooldown_time: Seconds | None = None
    retry_after: NonNegative | None = None


NATIVE_ROUTER_SECTIONS = ("retry", "breaker", "max_queue_depth", "semantic_cache", "cache")


class CacheParams(msgspec.Struct, frozen=True):
    type: str = "redis"
    ttl: PerMinute | None = None


class LiteLLMSettings(msgspec.Struct, frozen=True):
    num_retries: Count | None = None
    request_timeout: Seconds | None = None
    fallbacks: Fallbacks | None = None
    context_window_fallbacks: Fallbacks | None = None
    # Accepted: OpenAI-compatible upstreams get the request as sent; the Anthropic adapter
    # translates what it can and refuses (400) what it cannot honour, drop_params or not.
    drop_params: bool = False
    cache: bool | None = None
    cache_params: CacheParams | None = None


class GeneralSettings(msgspec.Struct, frozen=True):
    master_key: str | None = None
