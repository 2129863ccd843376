"""Prometheus metrics of a worker process (served on its own port; see `edge_workers.worker`)."""

from __future__ import annotations

import functools

from prometheus_client import Counter, Histogram, disable_created_metrics

disable_created_metrics()  # no `_created` twin of every series

_MS_BUCKETS = (1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)

JOBS = Counter(
    "llm_edge_worker_jobs_total", "Jobs finished by this worker, by answer status", ["provider", "status"]
)
QUEUE_WAIT = Histogram(
    "llm_edge_queue_wait_ms",
    "Time a job waited in the queue before a worker took it",
    ["provider"],
    buckets=(0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
UPSTREAM_DURATION = Histogram(
    "llm_edge_upstream_duration_ms",
    "Upstream call duration seen by the worker",
    ["provider"],
    buckets=_MS_BUCKETS,
)
BUILT_AHEAD = Counter(
    "llm_edge_worker_built_ahead_total",
    "Upstream requests built while their job's claim was on its way (edge_workers/ahead.py)",
    ["provider"],
)
HANDED = Counter(
    "llm_edge_worker_handed_total",
    "Jobs a miss handed to this idle worker already claimed for it (edge_workers/handoff.py)",
    ["provider"],
)
COST = Counter(
    "llm_edge_cost_usd",
    "What upstream answers cost in USD (genai-prices, or the deployment's own prices)",
    ["provider", "model"],
)
# Tokens are counted once, by the front (`llm_edge_tokens_total`, labelled like its requests).


class ProviderSeries:
    """The series of one provider, bound once: a worker serves one provider, and `labels()` on
    every job looks its series up again (five times per job, two on the miss's path)."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.queue_wait = QUEUE_WAIT.labels(provider)
        self.upstream_duration = UPSTREAM_DURATION.labels(provider)
        self.built_ahead = BUILT_AHEAD.labels(provider)
        self.handed = HANDED.labels(provider)
        self._jobs: dict[str, Counter] = {}

    def jobs(self, status: str) -> Counter:
        series = self._jobs.get(status)
        if series is None:
            series = self._jobs[status] = JOBS.labels(self.provider, status)
        return series


@functools.cache
def of(provider: str) -> ProviderSeries:
    return ProviderSeries(provider)
