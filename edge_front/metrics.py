"""Prometheus metrics of a front process, with the seed's names.

Label values are bounded: `model` is a configured model group, a model of the built-in catalog,
or one of the first `EDGE_METRICS_MAX_MODELS` other names this process routed (prefix routing
lets any `gpt-*` name through); past that, `other`. A client sending 10,000 made-up names adds
at most that many series. No `_created` twin series (they double the series count).

Several front processes on one port (`edge-agent front --processes N`) share one /metrics:
prometheus-client's multiprocess mode, on when PROMETHEUS_MULTIPROC_DIR is set before this module
is imported (the front group sets it for its children). Counters and histograms then add up over
the processes; each gauge says how its values combine (`multiprocess_mode`): the requests in
progress are summed over the live processes, the values every process reads from the same Redis
(queue depth, workers, breakers) are the most recent one written. A single front leaves the
variable unset and keeps the plain in-memory values (no mmap writes on the hot path).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()

REQUESTS = Counter(
    "llm_edge_requests_total",
    "Chat requests answered, by provider, model and status",
    ["provider", "model", "status"],
)
DURATION = Histogram(
    "llm_edge_request_duration_ms",
    "Time from request to response, as seen by the front (a stream: to its last byte)",
    ["provider", "model", "cache"],
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
ACTIVE = Gauge(
    "llm_edge_active_requests", "Chat requests in progress in this front process", multiprocess_mode="livesum"
)
WAITING = Gauge(
    "llm_edge_waiting_replies",
    "Requests waiting for a worker's answer in this front process",
    multiprocess_mode="livesum",
)
CLIENT_DISCONNECTS = Counter(
    "llm_edge_client_disconnects_total", "Streams whose client went away before the end (upstream cancelled)"
)
STREAMS = Counter("llm_edge_streams_total", "Streamed answers started, by source", ["source"])
# Read from Redis by every front process: the newest reading is the truth.
_SHARED: Final = "livemostrecent"
QUEUE_DEPTH = Gauge(
    "llm_edge_queue_depth",
    "Jobs queued or running on a provider's queue",
    ["provider"],
    multiprocess_mode=_SHARED,
)
PROVIDER_AVAILABLE = Gauge(
    "llm_edge_provider_available",
    "1 while the provider has a live worker and a deployment whose breaker is not open",
    ["provider"],
    multiprocess_mode=_SHARED,
)
LIVE_WORKERS = Gauge(
    "llm_edge_live_workers",
    "Workers of the provider heartbeating in the registry (0: its requests get 503 after the grace)",
    ["provider"],
    multiprocess_mode=_SHARED,
)
BREAKER_STATE = Gauge(
    "llm_edge_breaker_state",
    "Circuit breaker: 0 closed, 1 half-open, 2 open",
    ["deployment"],
    multiprocess_mode=_SHARED,
)
ATTEMPTS = Counter(
    "llm_edge_attempts_total", "Upstream attempts, by provider and outcome", ["provider", "outcome"]
)
FALLBACKS = Counter("llm_edge_fallbacks_total", "Requests answered by a fallback model group", ["model"])
STREAM_TTFT = Histogram(
    "llm_edge_stream_ttft_ms",
    "Streams from upstream: time from the request to its first chunk sent to the client",
    ["provider"],
    buckets=(1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000),
)
STREAM_CHUNK_GAP = Histogram(
    "llm_edge_stream_chunk_gap_ms",
    "Streams from upstream: time between two writes of chunks to the client",
    ["provider"],
    buckets=(0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)


class ModelLabels:
    """The `model` label value for a model name: itself while the set stays bounded."""

    def __init__(self, known: Iterable[str] = (), limit: int = 100) -> None:
        self.known = frozenset(known)
        self.limit = limit
        self._others: set[str] = set()

    def __call__(self, model: str) -> str:
        if model in self.known or model in self._others or not model:
            return model
        if len(self._others) < self.limit:
            self._others.add(model)
            return model
        return "other"


# Set at start from the model table and EDGE_METRICS_MAX_MODELS (edge_front.app).
model_label = ModelLabels()


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def exposition() -> bytes:
    """The /metrics body: this process's metrics, or every front process's of the group."""
    directory = _multiprocess_dir()
    if directory is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, directory)
    return generate_latest(registry)


def forget(gauge: Gauge, *labels: str) -> None:
    """Drop a gauge's series. In multiprocess mode series live in the processes' files and cannot
    be removed (prometheus-client warns and keeps them): the last value stays until the process
    exits."""
    if _multiprocess_dir() is None:
        gauge.remove(*labels)
