"""The semantic cache as a worker uses it: eligibility, lookup before the upstream call, and the
index entry that goes out with a cached answer.

A job is eligible when its model group has `semantic_cache` configured, its answer is written to
L2 (it has a cache key; Cache-Control: no-cache skips this lookup like the front's), it is
deterministic (temperature 0, or unset with `default_temperature: 0`), asks for one choice and
no tools, and its last message is the user's, text only, at most `max_chars` long. Its exact
context, everything but the last user message's text (tenant namespace, model, system prompt,
earlier messages, every parameter), names its partition; only that text is embedded.

A hit points at the matched request's L2 entry (one GET, on a hit only): no second copy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_workers.semantic import metrics, stream
from edge_workers.semantic.embedder import Embedder
from edge_workers.semantic.guard import Features, agree, decode_features, encode_features, features
from edge_workers.semantic.index import Entry, Index
from shared import keyspace
from shared.cache_keys import answer_fields, digest_of, namespace_of
from shared.commands import CommandSink
from shared.costs import split_cost
from shared.queue import Job
from shared.semantic_config import SemanticSettings

log = logging.getLogger("edge.semantic")


@dataclass
class Probe:
    """An eligible job's side of a lookup; its vector is kept for the index entry."""

    group: str
    settings: SemanticSettings
    partition: bytes
    text: str
    features: Features
    vector: np.ndarray | None = None


def last_user_text(body: Mapping[str, Any], settings: SemanticSettings) -> str | None:
    """The text to embed, or None when the request is not eligible."""
    temperature = body.get("temperature")
    if temperature is None:
        temperature = settings.default_temperature
    if temperature != 0 or body.get("n") not in (None, 1):
        return None
    if body.get("tools") or body.get("functions"):
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return None
    last = messages[-1]
    if last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):  # text parts only: an image or audio part is not comparable
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return None
        content = "\n".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str) or not content.strip() or len(content) > settings.max_chars:
        return None
    return content


def partition_of(body: Mapping[str, Any], namespace: str) -> bytes:
    """The exact context: every field that changes the answer, the last message without its text."""
    fields = answer_fields(dict(body))
    messages = list(fields["messages"])
    messages[-1] = {k: v for k, v in messages[-1].items() if k != "content"}
    fields["messages"] = messages
    return digest_of(fields, namespace)


class SemanticCache:
    def __init__(
        self, provider: str, groups: dict[str, SemanticSettings], embedder: Embedder, max_vectors: int
    ) -> None:
        self.provider = provider
        self.groups = groups
        self.embedder = embedder
        self.index = Index(max_vectors)
        # One thread: embeddings never run on the worker's event loop, nor two at once.
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="edge-embed")

    def probe(self, job: Job, body: Mapping[str, Any]) -> Probe | None:
        group = body.get("model")
        settings = self.groups.get(group) if isinstance(group, str) else None
        if settings is None or job.cache_key is None or job.skip_lookup:
            return None
        text = last_user_text(body, settings)
        if text is None:
            return None
        partition = partition_of(body, namespace_of(job.cache_key))
        return Probe(str(group), settings, partition, text, features(text))

    async def lookup(self, job: Job, probe: Probe, cache_redis: Redis) -> bytes | None:
        """The cached completion to serve for `job`, or None (go upstream). In shadow mode a
        would-be hit is logged and counted, and None returned."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        vector = await loop.run_in_executor(self.executor, self.embedder.embed, probe.text)
        labels = (self.provider, probe.group)
        metrics.EMBED_MS.labels(*labels).observe((time.perf_counter() - started) * 1000)
        if vector is None:
            return None  # longer than the model reads: its tail would not count
        probe.vector = vector
        refused = False
        for similarity, entry in self.index.search(probe.partition, vector, probe.settings.threshold):
            if entry.cache_key == job.cache_key:
                continue  # this very request: its L2 entry is gone or the front skipped it
            try:
                cached = decode_features(entry.features)
            except msgspec.DecodeError:
                cached = None  # not written by this version: never served
            if cached is None or not agree(cached, probe.features):
                refused = True
                continue
            if probe.settings.mode == "shadow":
                metrics.SHADOW_HITS.labels(*labels).inc()
                log.info(
                    "request %s: semantic cache would have served the answer to request %s "
                    "(similarity %.3f, shadow mode)",
                    job.request_id,
                    entry.request_id,
                    similarity,
                    extra={"request_id": job.request_id, "provider": self.provider, "model": probe.group},
                )
                return None
            try:
                value = await cache_redis.get(keyspace.cache_entry(entry.cache_key))
            except (RedisError, OSError):
                return None  # a cache that cannot answer is a miss, as on the front
            if value is None:  # evicted or expired early: the vector points at nothing
                self.index.remove(probe.partition, entry.cache_key)
                continue
            metrics.HITS.labels(*labels).inc()
            return split_cost(value)[0]
        if refused:
            metrics.GUARD_REFUSALS.labels(*labels).inc()
        return None

    def append(self, pipe: CommandSink, *, job: Job, probe: Probe) -> None:
        """Queue on `pipe` the index entry of the answer `job` is about to cache."""
        if probe.vector is None or job.cache_key is None:
            return
        expires_ms = int((time.time() + job.cache_ttl_s) * 1000)
        entry = Entry(job.cache_key, encode_features(probe.features), expires_ms, job.request_id)
        stream.append(pipe, probe.partition, probe.vector, entry, job.cache_ttl_s)

    async def follow(self, redis: Redis) -> None:
        """Keep the index fed from the shared stream (a task for the worker's whole life)."""

        def counted() -> None:
            metrics.VECTORS.set(self.index.count)

        await stream.follow(redis, self.index, counted)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
