"""LiteLLM's proxy config, translated into this gateway's own config form.

A LiteLLM `config.yaml` works unchanged: what the gateway can honour is translated (models and
their providers, keys, limits, timeouts, routing, retries, cooldowns, cache, master key), and
everything else is reported as a warning naming its path, never dropped silently. The gateway's
own form (README "Configuration") passes through untouched, so both can be mixed in one file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, get_args

import msgspec

from shared.compat import SERVICES
from shared.config_source import Path, PathError, dotted, parse_dotted
from shared.litellm_schema import (
    NATIVE_ROUTER_SECTIONS,
    CacheParams,
    Fallbacks,
    GeneralSettings,
    LiteLLMParams,
    LiteLLMSettings,
    ModelEntry,
    RouterIn,
)
from shared.routing import Strategy
from shared.wire import validation_error_param

ENV_PREFIX = "os.environ/"
NATIVE_STRATEGIES: tuple[str, ...] = get_args(Strategy)
# LiteLLM's strategies, mapped to the closest one here (README "Coming from LiteLLM" says why).
LITELLM_STRATEGIES: dict[str, Strategy] = {
    "simple-shuffle": "weighted",  # random by weight (LiteLLM also weighs by rpm/tpm)
    "least-busy": "least-latency",  # in-flight counts are not shared; latency follows load
    "latency-based-routing": "least-latency",
    "usage-based-routing": "weighted",  # spread the load; rpm/tpm limits are enforced anyway
    "usage-based-routing-v2": "weighted",
    "cost-based-routing": "lowest-cost",
}
# LiteLLM provider prefixes served by the openai adapter (any OpenAI-compatible base URL).
OPENAI_COMPATIBLE = frozenset(
    {"openai", "custom_openai", "openai_like", "hosted_vllm", "lm_studio", "llamafile"}
)
# ... of which these have no default URL: LiteLLM needs an api_base for them too.
NEEDS_API_BASE = OPENAI_COMPATIBLE - {"openai"}
# LiteLLM's inference for a model named without a prefix, for the providers served here.
BARE_NAMES: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-", "o1", "o3", "o4", "chatgpt-", "ft:gpt-", "text-embedding-"),
    "anthropic": ("claude-",),
    "gemini": ("gemini-",),
}
# LiteLLM provider prefixes served by an adapter of their own.
NATIVE = frozenset({"anthropic", "gemini", "azure", "bedrock"})
NOT_SERVED_WHY = {
    "text-completion-openai": "the legacy completions API is not served here, only chat completions",
}
BEDROCK_ONLY_CONVERSE = "only Bedrock's Converse API is served here (bedrock/<model id>, bedrock/converse/)"
SERVED = (
    "served here: openai/, anthropic/, gemini/, azure/, bedrock/ and OpenAI-compatible hosted_vllm/, "
    "lm_studio/, llamafile/, groq/, mistral/, together_ai/, deepseek/, openrouter/"
)
# LiteLLM's bedrock/ route prefixes: the gateway always speaks Converse, which serves them all.
BEDROCK_ROUTES = ("converse/", "invoke/")


def bedrock_route(model: str) -> str | None:
    """LiteLLM's route prefix of a bedrock/ model (`converse/`, `llama/`...), None for a plain
    model id or ARN (ids always hold a dot: `amazon.nova-lite-v1:0`; ARNs start `arn:`)."""
    head, slash, _ = model.partition("/")
    return f"{head}/" if slash and "." not in head and not head.startswith("arn:") else None


AWS_PARAMS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")
CALLBACKS = "no callbacks here; see tracing"
REDIS_SETTING = "the gateway's one Redis is REDIS_URL"
REASONS: dict[str, str] = {
    "success_callback": CALLBACKS,
    "failure_callback": CALLBACKS,
    "callbacks": CALLBACKS,
    "service_callback": CALLBACKS,
    "redis_host": REDIS_SETTING,
    "redis_port": REDIS_SETTING,
    "redis_password": REDIS_SETTING,
    "redis_url": REDIS_SETTING,
    "host": REDIS_SETTING,
    "port": REDIS_SETTING,
    "password": REDIS_SETTING,
    "url": REDIS_SETTING,
    "database_url": "no database here",
    "set_verbose": "use LOG_LEVEL",
    "json_logs": "logs are plain lines",
}


class FileSettings(msgspec.Struct, frozen=True):
    """Gateway settings the file sets; the matching environment variable, if set, wins."""

    master_key: str | None = None
    request_timeout_s: float | None = None
    enable_l2_cache: bool | None = None
    l2_ttl_s: int | None = None
    l1_ttl_s: float | None = None
    environment: dict[str, str] = {}  # applied only where the real environment has no value


class Translation(msgspec.Struct, frozen=True):
    # The gateway's own form: (index in the file, entry) for each model served, router_settings.
    model_list: list[tuple[int, Any]]
    router_settings: dict[str, Any]
    settings: FileSettings
    warnings: list[str]  # "path: what happened", one per ignored key or skipped model


T = TypeVar("T")


def convert(raw: Any, kind: type[T], path: Path) -> T:
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        message, param = validation_error_param(e)
        raise PathError((*path, *parse_dotted(param or "")), message) from None


def resolve_model(model: str, custom_provider: str | None) -> tuple[str, str, str | None]:
    """(LiteLLM provider, upstream model, provider served here or None) by LiteLLM's rules: an
    explicit custom_llm_provider, else the prefix before the first '/', else the model's name."""
    if custom_provider:
        return custom_provider, model.removeprefix(f"{custom_provider}/"), _served(custom_provider)
    prefix, slash, rest = model.partition("/")
    if slash:
        return prefix, rest, _served(prefix)
    for provider, prefixes in BARE_NAMES.items():
        if model.startswith(prefixes):
            return provider, model, provider
    return "", model, None


def _served(litellm_provider: str) -> str | None:
    if litellm_provider in OPENAI_COMPATIBLE or litellm_provider in SERVICES:
        return "openai"
    return litellm_provider if litellm_provider in NATIVE else None


def strategy(value: str, path: Path) -> Strategy:
    if value in NATIVE_STRATEGIES:
        return value  # type: ignore[return-value]
    if value in LITELLM_STRATEGIES:
        return LITELLM_STRATEGIES[value]
    valid = ", ".join((*NATIVE_STRATEGIES, *LITELLM_STRATEGIES))
    raise PathError(path, f"{value!r} is not a routing strategy; valid: {valid}")


class _Translator:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.warnings: list[str] = []
        self.max_retries: list[int] = []  # per-deployment max_retries seen

    def warn(self, path: Path, text: str) -> None:
        self.warnings.append(f"{dotted(path)}: {text}")

    def ignore_unknown(
        self, raw: Any, known: tuple[str, ...], path: Path, default_why: str = "not supported here"
    ) -> None:
        if isinstance(raw, dict):
            for key in raw:
                if key not in known:
                    why = REASONS.get(str(key), default_why)
                    self.warn((*path, str(key)), f"ignored ({why})")

    def from_env(self, value: str, path: Path) -> str:
        """`os.environ/NAME` resolved now (api_base, master_key); anything else as written."""
        if not value.startswith(ENV_PREFIX):
            return value
        name = value.removeprefix(ENV_PREFIX)
        if not self.env.get(name):
            raise PathError(path, f"{value}: ${name} is not set")
        return self.env[name]

    # ---- model_list ------------------------------------------------------------------------

    def entry(self, raw: dict[str, Any], i: int) -> dict[str, Any] | None:
        """The gateway's form of one LiteLLM entry; None (with a warning) if not served here."""
        path: Path = ("model_list", i)
        entry = convert(raw, ModelEntry, path)
        self.ignore_unknown(raw, ModelEntry.__struct_fields__, path)
        params_path = (*path, "litellm_params")
        self.ignore_unknown(
            raw["litellm_params"],
            LiteLLMParams.__struct_fields__,
            params_path,
            "call parameters are sent by the client, not added from the file",
        )
        p = entry.litellm_params
        family, model, provider = resolve_model(p.model, p.custom_llm_provider)
        route = bedrock_route(model) if provider == "bedrock" else None
        if route is not None and route not in BEDROCK_ROUTES:
            provider, family = None, f"bedrock/{route}"  # LiteLLM's invoke-only or non-Bedrock routes
        if provider is None:
            why = (
                NOT_SERVED_WHY.get(family)
                or (BEDROCK_ONLY_CONVERSE if family.startswith("bedrock/") else None)
                or (f"provider {family!r} is not served here" if family else "its provider cannot be told")
            )
            self.warn(
                (*params_path, "model"), f"model {entry.model_name!r} ({p.model}) skipped: {why}; {SERVED}"
            )
            return None
        out: dict[str, Any] = {"model_name": entry.model_name, "provider": provider, "model": model}
        if provider == "bedrock":
            self.bedrock(p, out, params_path)
        else:
            for name in (*AWS_PARAMS, "aws_region_name", "aws_profile_name", "aws_bedrock_runtime_endpoint"):
                if getattr(p, name) is not None:
                    self.warn((*params_path, name), "ignored (only bedrock/ models use it)")
        service = SERVICES.get(family)
        if service is not None:  # a hosted OpenAI-compatible service: its URL, key and quirks
            out.update(base_url=service.base_url, api_key_env=service.key_env, **service.switches)
        bases = (
            "api_base",
            "base_url",
            *(("aws_bedrock_runtime_endpoint",) if provider == "bedrock" else ()),
        )
        base_name = next((name for name in bases if getattr(p, name)), None)
        base_raw = getattr(p, base_name) if base_name else None
        if provider == "azure":  # LiteLLM's own variables for Azure, where the entry names none
            base_raw = base_raw or self.env.get("AZURE_API_BASE")
            out["api_key_env"] = "AZURE_API_KEY"
        if base_raw:
            base = self.from_env(base_raw, (*params_path, base_name or "api_base"))
            if provider == "anthropic":  # LiteLLM's Anthropic api_base may name the endpoint
                base = base.rstrip("/").removesuffix("/messages").removesuffix("/v1")
            out["base_url"] = base
        elif family in NEEDS_API_BASE:
            raise PathError(params_path, f"{family}/ models need an api_base (LiteLLM's rule too)")
        if p.api_key is not None and provider == "bedrock":
            self.warn((*params_path, "api_key"), "ignored (Bedrock requests are signed with AWS credentials)")
        elif p.api_key is not None:
            if p.api_key.startswith(ENV_PREFIX):
                out["api_key_env"] = p.api_key.removeprefix(ENV_PREFIX)
            else:
                out["api_key"] = p.api_key
        if p.api_version is not None:
            if provider == "azure":
                out["api_version"] = p.api_version
            else:
                self.warn((*params_path, "api_version"), "ignored (only azure/ uses it)")
        if p.azure_ad_token is not None:
            if provider != "azure":
                raise PathError((*params_path, "azure_ad_token"), "only azure/ models take an azure_ad_token")
            if p.api_key is not None:
                raise PathError(
                    (*params_path, "azure_ad_token"), "give an api_key or an azure_ad_token, not both"
                )
            token = p.azure_ad_token
            out["auth"] = "bearer"
            if token.startswith(ENV_PREFIX):
                out["api_key_env"] = token.removeprefix(ENV_PREFIX)
            else:
                out["api_key"] = token
        for name, value in (
            ("rpm", p.rpm or entry.rpm),
            ("tpm", p.tpm or entry.tpm),
            ("timeout_s", p.timeout),
            ("stream_timeout_s", p.stream_timeout),
            ("priority", p.order),
            ("weight", p.weight),
        ):
            if value is not None:
                out[name] = value
        for side in ("input", "output"):
            per_token = getattr(entry.model_info, f"{side}_cost_per_token")
            per_token = per_token if per_token is not None else getattr(p, f"{side}_cost_per_token")
            if per_token is not None:
                out[f"{side}_cost_per_1m"] = per_token * 1_000_000
        if p.max_retries is not None:
            self.max_retries.append(p.max_retries)
        if entry.cache is not None:
            out["cache"] = raw["cache"]
        if entry.semantic_cache is not None:
            out["semantic_cache"] = entry.semantic_cache
        return out

    def bedrock(self, p: LiteLLMParams, out: dict[str, Any], path: Path) -> None:
        """LiteLLM's AWS parameters: the region resolved now; the key pair as the variables that
        hold it (os.environ/NAME, read by the workers) or as written; a profile by name."""
        for route in BEDROCK_ROUTES:
            out["model"] = out["model"].removeprefix(route)
        if p.aws_region_name is not None:
            out["region"] = self.from_env(p.aws_region_name, (*path, "aws_region_name"))
        aws: dict[str, str] = {}
        for name in AWS_PARAMS:
            value = getattr(p, name)
            if value is None:
                continue
            field = name.removeprefix("aws_")
            if value.startswith(ENV_PREFIX):
                aws[f"{field}_env"] = value.removeprefix(ENV_PREFIX)
            else:
                aws[field] = value
        if p.aws_profile_name is not None:
            aws["profile"] = self.from_env(p.aws_profile_name, (*path, "aws_profile_name"))
        if aws:
            out["aws"] = aws

    def model_list(self, raw: Any) -> list[tuple[int, Any]]:
        if not isinstance(raw, list) or not raw:
            raise PathError(("model_list",), "must list at least one model (the gateway would serve none)")
        served: list[tuple[int, Any]] = []
        skipped: list[str] = []
        for i, item in enumerate(raw):
            if isinstance(item, dict) and "litellm_params" in item:
                before = len(self.warnings)
                out = self.entry(item, i)
                if out is None:
                    skipped.append(self.warnings[before])
                    continue
                item = out
            served.append((i, item))
        if not served:
            raise PathError(("model_list",), "no model left to serve: " + "; ".join(skipped))
        # The index in the file names each deployment: fronts and workers read the same file.
        return served

    # ---- router_settings / litellm_settings -------------------------------------------------

    @staticmethod
    def fallbacks(value: Fallbacks | None, into: dict[str, list[str]]) -> None:
        for mapping in value if isinstance(value, list) else [value or {}]:
            for group, targets in mapping.items():
                into[group] = list(targets)

    def router(self, raw: Any, ls: LiteLLMSettings, served: set[str], names: set[str]) -> dict[str, Any]:
        path: Path = ("router_settings",)
        raw = raw or {}
        r = convert(raw, RouterIn, path)
        known = (*RouterIn.__struct_fields__, *NATIVE_ROUTER_SECTIONS)
        self.ignore_unknown(raw, known, path)
        out: dict[str, Any] = {k: raw[k] for k in NATIVE_ROUTER_SECTIONS if k in raw}
        if r.routing_strategy is not None:
            out["routing_strategy"] = strategy(r.routing_strategy, (*path, "routing_strategy"))
        out["group_strategies"] = {
            group: strategy(value, (*path, "group_strategies", group))
            for group, value in r.group_strategies.items()
        }
        for name in ("fallbacks", "context_window_fallbacks"):
            merged: dict[str, list[str]] = {}
            self.fallbacks(getattr(ls, name), merged)  # router_settings wins for the same group
            self.fallbacks(getattr(r, name), merged)
            out[name] = self.drop_skipped(merged, (*path, name), served, names)
        retry = dict(out.get("retry") or {})
        retries = r.num_retries if r.num_retries is not None else ls.num_retries
        if retries is None and self.max_retries:
            retries = max(self.max_retries)
        if retries is not None:
            retry.setdefault("max_attempts", retries + 1)  # the first attempt plus the retries
        if r.retry_after is not None:
            retry.setdefault("min_backoff_ms", r.retry_after * 1000)
        breaker = dict(out.get("breaker") or {})
        if r.allowed_fails is not None:
            # LiteLLM cools a deployment down on the failure after `allowed_fails` in a minute.
            breaker.setdefault("failures", r.allowed_fails + 1)
            breaker.setdefault("window_s", 60)
        if r.cooldown_time is not None:
            breaker.setdefault("cooldown_s", r.cooldown_time)
        if retry:
            out["retry"] = retry
        if breaker:
            out["breaker"] = breaker
        return out

    def drop_skipped(
        self, merged: dict[str, list[str]], path: Path, served: set[str], names: set[str]
    ) -> dict[str, list[str]]:
        """Fallbacks naming a model that was skipped (provider not served) lose that model."""
        skipped = names - served
        out = {}
        for group, targets in merged.items():
            if group in skipped:
                self.warn((*path, group), "ignored (the model was skipped)")
                continue
            kept = [t for t in targets if t not in skipped]
            for t in targets:
                if t in skipped:
                    self.warn((*path, group), f"fallback {t!r} ignored (the model was skipped)")
            out[group] = kept
        return out

    def litellm_settings(self, raw: Any) -> tuple[LiteLLMSettings, FileSettings]:
        path: Path = ("litellm_settings",)
        raw = raw or {}
        ls = convert(raw, LiteLLMSettings, path)
        self.ignore_unknown(raw, LiteLLMSettings.__struct_fields__, path)
        enable, l2_ttl, l1_ttl = None, None, None
        params_raw = raw.get("cache_params") if isinstance(raw, dict) else None
        params_path = (*path, "cache_params")
        if ls.cache is False:
            enable = False
        elif ls.cache:
            params = ls.cache_params or CacheParams()
            self.ignore_unknown(params_raw, CacheParams.__struct_fields__, params_path)
            if params.type == "redis":
                enable, l2_ttl = True, params.ttl
            elif params.type == "local":
                enable, l1_ttl = False, params.ttl  # in-process only: L1 alone
            else:
                self.warn((*params_path, "type"), f"{params.type!r} ignored (only redis and local here)")
        if ls.cache_params is not None and not ls.cache:
            self.warn(params_path, "ignored (litellm_settings.cache is not true)")
        return ls, FileSettings(enable_l2_cache=enable, l2_ttl_s=l2_ttl, l1_ttl_s=l1_ttl)

    def master_key(self, raw: Any) -> str | None:
        path: Path = ("general_settings",)
        raw = raw or {}
        general = convert(raw, GeneralSettings, path)
        self.ignore_unknown(raw, GeneralSettings.__struct_fields__, path)
        if general.master_key is None:
            return None
        return self.from_env(general.master_key, (*path, "master_key"))


TOP_LEVEL = ("model_list", "router_settings", "litellm_settings", "general_settings", "environment_variables")


def environment(raw: Any) -> dict[str, str]:
    values = convert(raw or {}, dict[str, str | int | float | bool], ("environment_variables",))
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in values.items()
    }


def translate(data: Any, env: Mapping[str, str]) -> Translation:
    """The gateway's form of a config document (LiteLLM's, its own, or a mix). Raises PathError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise PathError((), "expected a mapping with a model_list")
    extra_env = environment(data.get("environment_variables"))
    t = _Translator({**extra_env, **env})  # the real environment wins
    t.ignore_unknown(data, TOP_LEVEL, ())
    ls, cache = t.litellm_settings(data.get("litellm_settings"))
    models = t.model_list(data.get("model_list"))
    names = {str(e.get("model_name")) for e in data["model_list"] if isinstance(e, dict)}
    served = {str(m.get("model_name")) for _, m in models if isinstance(m, dict)}
    router = t.router(data.get("router_settings"), ls, served, names)
    router_timeout = convert(data.get("router_settings") or {}, RouterIn, ("router_settings",)).timeout
    settings = msgspec.structs.replace(
        cache,
        master_key=t.master_key(data.get("general_settings")),
        request_timeout_s=router_timeout if router_timeout is not None else ls.request_timeout,
        environment=extra_env,
    )
    return Translation(models, router, settings, t.warnings)
