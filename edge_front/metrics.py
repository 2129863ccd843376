"""Prometheus metrics of a front process, with the seed's names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "llm_edge_requests_total",
    "Chat requests answered, by provider, model and status",
    ["provider", "model", "status"],
)
DURATION = Histogram(
    "llm_edge_request_duration_ms",
    "Time from request to response, as seen by the front",
    ["cache"],
    buckets=(0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000),
)
CACHE_HITS = Counter("llm_edge_cache_hits_total", "Cache hits by tier", ["tier"])
CACHE_MISSES = Counter("llm_edge_cache_misses_total", "Cache misses by tier", ["tier"])
CACHE_ERRORS = Counter(
    "llm_edge_cache_errors_total", "L2 operations that failed or timed out (counted as misses)"
)
CACHE_SAVINGS = Counter(
    "llm_edge_cache_savings_usd", "What the answers served from the cache cost when they were asked (USD)"
)
TOKENS = Counter("llm_edge_tokens_total", "Tokens in upstream answers", ["provider", "model", "type"])
ACTIVE = Gauge("llm_edge_active_requests", "Chat requests in progress in this front process")
WAITING = Gauge("llm_edge_waiting_replies", "Requests waiting for a worker's answer in this front process")
CLIENT_DISCONNECTS = Counter(
    "llm_edge_client_disconnects_total", "Streams whose client went away before the end (upstream cancelled)"
)
STREAMS = Counter("llm_edge_streams_total", "Streamed answers started, by source", ["source"])
QUEUE_DEPTH = Gauge("llm_edge_queue_depth", "Jobs queued or running on a provider's queue", ["provider"])
PROVIDER_AVAILABLE = Gauge(
    "llm_edge_provider_available",
    "1 while at least one deployment of the provider has a breaker not open",
    ["provider"],
)
LIVE_WORKERS = Gauge(
    "llm_edge_live_workers",
    "Workers of the provider heartbeating in the registry (0: its requests get 503 after the grace)",
    ["provider"],
)
BREAKER_STATE = Gauge(
    "llm_edge_breaker_state", "Circuit breaker: 0 closed, 1 half-open, 2 open", ["deployment"]
)
ATTEMPTS = Counter(
    "llm_edge_attempts_total", "Upstream attempts, by provider and outcome", ["provider", "outcome"]
)
FALLBACKS = Counter("llm_edge_fallbacks_total", "Requests answered by a fallback model group", ["model"])
