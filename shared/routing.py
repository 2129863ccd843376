"""Routing policy: strategies, fallbacks, retries, circuit breakers and admission limits.

Read from the `router_settings` section of the EDGE_CONFIG file. The front uses it to choose a
deployment for each attempt; workers use the breaker settings when they record outcomes.
"""

from __future__ import annotations

import random
from typing import Annotated, Literal

import msgspec

from shared.cache_policy import DEFAULT_POLICY, CachePolicy
from shared.semantic_config import SemanticSettings

Strategy = Literal["priority", "weighted", "least-latency", "lowest-cost"]

# Worth another attempt: the deployment was busy, flaky or slow, not the request wrong.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
DEFAULT_MAX_QUEUE_DEPTH = 10_000


AtLeastOne = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[float, msgspec.Meta(ge=0)]
Positive = Annotated[float, msgspec.Meta(gt=0)]


class RetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_attempts: AtLeastOne = 3  # per request, across deployments and fallbacks
    initial_backoff_ms: NonNegative = 100.0
    multiplier: Annotated[float, msgspec.Meta(ge=1)] = 2.0
    max_backoff_ms: NonNegative = 5_000.0
    min_backoff_ms: NonNegative = 0.0  # never retry the same deployment sooner (LiteLLM's retry_after)


class BreakerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    failures: AtLeastOne = 5  # failures within `window_s` that open the breaker
    window_s: Positive = 60.0
    cooldown_s: Positive = 30.0  # how long it stays open before letting probes through
    half_open_probes: AtLeastOne = 2  # requests let through at once while half-open
    close_after: AtLeastOne = 2  # probe successes that close it again


class RouterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    routing_strategy: Strategy = "priority"
    group_strategies: dict[str, Strategy] = {}
    fallbacks: dict[str, list[str]] = {}  # model group -> groups to try when all of it failed
    context_window_fallbacks: dict[str, list[str]] = {}  # ... when the prompt was too long
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    max_queue_depth: dict[str, AtLeastOne] = {}  # provider -> jobs queued or running before refusing
    cache: CachePolicy = DEFAULT_POLICY  # the default cache policy (model groups may set their own)
    semantic_cache: SemanticSettings | None = None  # for every model group (shared/semantic_config.py)

    def strategy(self, group: str) -> Strategy:
        return self.group_strategies.get(group, self.routing_strategy)

    def queue_limit(self, provider: str) -> int:
        return self.max_queue_depth.get(provider, DEFAULT_MAX_QUEUE_DEPTH)

    def unknown_groups(self, known: set[str]) -> list[str]:
        """Group names the settings mention that no deployment serves."""
        named = set(self.group_strategies) | set(self.fallbacks) | set(self.context_window_fallbacks)
        for targets in (*self.fallbacks.values(), *self.context_window_fallbacks.values()):
            named.update(targets)
        return sorted(named - known)


def is_retryable(status: int) -> bool:
    return status in RETRYABLE_STATUSES


def backoff_s(retry: RetrySettings, attempt: int, retry_after: float | None, rng: random.Random) -> float:
    """Delay before attempt number `attempt` (1 = the first retry): exponential with jitter,
    never shorter than the upstream's Retry-After."""
    base = min(retry.max_backoff_ms, retry.initial_backoff_ms * retry.multiplier ** (attempt - 1)) / 1000
    delay = base * rng.uniform(0.5, 1.0)
    return max(delay, retry_after or 0.0, retry.min_backoff_ms / 1000)
