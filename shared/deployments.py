"""What a deployment is: the providers the gateway speaks, where each lives by default, and the
`Deployment` record one upstream is served by (shared/config.py builds them from the
environment and EDGE_CONFIG)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

import msgspec

from shared.aws_config import AwsCredentials
from shared.cache_policy import CachePolicy
from shared.semantic_config import SemanticSettings

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
