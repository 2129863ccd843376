"""The semantic cache's Prometheus metrics, on the worker's port. Imported only where the cache
is configured (a worker without it exports none of them). Labels: provider and model group only
(groups come from the config file, so they are bounded)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HITS = Counter("llm_edge_semantic_hits", "Requests answered from the semantic cache", ["provider", "model"])
SHADOW_HITS = Counter(
    "llm_edge_semantic_shadow_hits",
    "Requests the semantic cache would have answered (mode: shadow); the upstream answered them",
    ["provider", "model"],
)
GUARD_REFUSALS = Counter(
    "llm_edge_semantic_guard_refusals",
    "Lookups with a cached message above the threshold that the lexical guard refused",
    ["provider", "model"],
)
EMBED_MS = Histogram(
    "llm_edge_semantic_embed_ms",
    "Time to embed a request's last user message (in the worker's embedding thread, queueing included)",
    ["provider", "model"],
    buckets=(0.5, 1, 2, 3, 5, 7.5, 10, 15, 25, 50, 100, 250),
)
VECTORS = Gauge("llm_edge_semantic_vectors", "Vectors this worker's semantic index holds")
