"""`GET /admin/state`: what the dashboard shows, read from Redis (three pipelined round trips,
polled by the page every second or two; nothing here is on a request's path).

Sources (shared/keyspace.py): each provider's queue sorted set (score: enqueue ms), worker
registry (score: heartbeat ms) and load hash (jobs each worker holds), its recent-outcomes
stream (written by workers with each answer: shared/outcomes.py), each deployment's breaker
hash, the virtual keys' records and spend hashes, and the shared action log. The cache numbers
are this front process's own counters (the L1 is per process; other fronts count their own).
"""

from __future__ import annotations

import math
import time
from collections import Counter

import msgspec
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from edge_front.dashboard.actions import Action, parse_action
from shared import keys, keyspace
from shared.breaker import BreakerView, outcome_of
from shared.config import ModelTable
from shared.outcomes import OUTCOMES_MAXLEN, JobOutcome, parse
from shared.queue import WORKER_DEAD_AFTER_S

WINDOW_MS = 60_000  # throughput, error rate, latency and per-deployment failures: the last minute
MAX_FAILURES = 50
MAX_ACTIONS = 20
MAX_KEYS = 100
BREAKER_FIELDS = ("state", "opened_at", "forced_until", "forced_by")


class Latency(msgspec.Struct):
    p50: float | None  # ms, None without a measured job in the window
    p95: float | None


class WorkerView(msgspec.Struct):
    id: str
    heartbeat_age_s: float
    running: int  # jobs it holds


class ProviderView(msgspec.Struct):
    queued: int  # waiting for a worker (running ones not counted)
    running: int
    oldest_queued_s: float  # age of the oldest job in the queue; 0 when none waits
    throughput_per_min: float  # jobs finished in the last minute
    error_rate: float | None  # share of them the upstream or gateway failed (5xx, 408, 429)
    latency_ms: Latency
    workers: list[WorkerView]  # live ones (heartbeat within WORKER_DEAD_AFTER_S)


class DeploymentView(msgspec.Struct):
    id: str
    provider: str
    model: str
    breaker: str  # closed | open | half_open
    recent_failures: int  # failed attempts in the last minute
    cooldown_left_s: float  # until an open breaker lets probes through
    forced_by: str | None = None  # set while an operator holds it open


class FailureView(msgspec.Struct):
    time: float  # unix seconds
    request_id: str
    model: str
    deployment: str
    status: int
    message: str  # redacted and truncated by the worker


class CacheTier(msgspec.Struct):
    hits: int
    misses: int
    hit_ratio: float | None


class KeyView(msgspec.Struct):
    key_id: str
    alias: str | None
    spend: float  # USD in the current budget period
    max_budget: float | None
    blocked: bool


class AdminState(msgspec.Struct):
    time: float
    front_id: str
    providers: dict[str, ProviderView]
    deployments: list[DeploymentView]
    recent_failures: list[FailureView]
    cache: dict[str, CacheTier]
    keys: list[KeyView]
    actions: list[Action]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return None
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def provider_view(
    now_ms: int,
    queue_len: int,
    oldest: list[tuple[bytes, float]],
    registry: list[tuple[bytes, float]],
    load: dict[bytes, bytes],
    recent: list[JobOutcome],
) -> ProviderView:
    """One provider's numbers; `recent` holds its outcomes newest first (as read)."""
    held = {k.decode(): int(v) for k, v in load.items()}
    workers = [
        WorkerView(wid.decode(), round(max(0.0, now_ms - score) / 1000, 2), held.get(wid.decode(), 0))
        for wid, score in registry
        if now_ms - score <= WORKER_DEAD_AFTER_S * 1000
    ]
    running = sum(held.values())
    queued = max(0, queue_len - running)  # arq keeps a running job in its queue until it ends
    window = [o for o in recent if o.time_ms >= now_ms - WINDOW_MS]
    # The stream is capped: when it holds less than the minute, scale what it does hold.
    span_ms = WINDOW_MS
    if window and len(recent) >= OUTCOMES_MAXLEN and len(window) == len(recent):
        span_ms = max(1000, now_ms - window[-1].time_ms)
    failed = sum(1 for o in window if outcome_of(o.status, True) == "fail")
    latencies = sorted(o.latency_ms for o in window if o.latency_ms >= 0)
    return ProviderView(
        queued=queued,
        running=running,
        oldest_queued_s=round(max(0.0, now_ms - oldest[0][1]) / 1000, 2) if queued and oldest else 0.0,
        throughput_per_min=round(len(window) * WINDOW_MS / span_ms, 1),
        error_rate=round(failed / len(window), 4) if window else None,
        latency_ms=Latency(percentile(latencies, 0.5), percentile(latencies, 0.95)),
        workers=workers,
    )


def cache_view() -> dict[str, CacheTier]:
    tiers = {}
    for tier in ("l1", "l2"):
        hits = int(REGISTRY.get_sample_value("llm_edge_cache_hits_total", {"tier": tier}) or 0)
        misses = int(REGISTRY.get_sample_value("llm_edge_cache_misses_total", {"tier": tier}) or 0)
        tiers[tier] = CacheTier(hits, misses, round(hits / (hits + misses), 4) if hits + misses else None)
    return tiers


async def gather(redis: Redis, models: ModelTable, front_id: str) -> AdminState:
    now_ms = int(time.time() * 1000)
    providers = sorted(models.providers())
    async with redis.pipeline(transaction=False) as pipe:
        for p in providers:
            pipe.zcard(keyspace.queue(p))
            pipe.zrange(keyspace.queue(p), 0, 0, withscores=True)
            pipe.zrange(keyspace.workers(p), 0, -1, withscores=True)
            pipe.hgetall(keyspace.load(p))
            pipe.xrevrange(keyspace.outcomes(p), count=OUTCOMES_MAXLEN)
        pipe.xrevrange(keyspace.admin_actions(), count=MAX_ACTIONS)
        pipe.zrange(keyspace.key_index(), 0, MAX_KEYS - 1)
        *per_provider, action_entries, key_ids = await pipe.execute()

    views: dict[str, ProviderView] = {}
    everything: list[JobOutcome] = []
    for i, p in enumerate(providers):
        queue_len, oldest, registry, load, entries = per_provider[5 * i : 5 * i + 5]
        recent = [o for o in (parse(fields) for _, fields in entries) if o is not None]
        views[p] = provider_view(now_ms, int(queue_len), oldest, registry, load, recent)
        everything.extend(recent)

    deployments = {d.id: d for d in models.deployments()}
    for o in everything:  # a model another front routed (no config file): this front's too now
        if o.deployment not in deployments and (d := models.by_id(o.deployment)) is not None:
            deployments[o.deployment] = d
    ids = sorted(deployments)
    rows = await keys.load_rows(redis, [k.decode() for k in key_ids])
    async with redis.pipeline(transaction=False) as pipe:
        for deployment_id in ids:
            pipe.hmget(keyspace.breaker(deployment_id), list(BREAKER_FIELDS))
        breakers = await pipe.execute()

    cutoff = now_ms - WINDOW_MS
    failures = Counter(
        o.deployment for o in everything if o.time_ms >= cutoff and outcome_of(o.status, True) == "fail"
    )
    settings = models.router.breaker
    deployment_views = []
    for deployment_id, (state, opened_at, forced_until, forced_by) in zip(ids, breakers, strict=True):
        d = deployments[deployment_id]
        view = BreakerView.from_fields([state, opened_at, None])
        effective = view.effective(now_ms, settings)
        left = view.opened_at_ms + settings.cooldown_s * 1000 - now_ms if effective == "open" else 0.0
        held = forced_by is not None and forced_until is not None and int(forced_until) > now_ms
        deployment_views.append(
            DeploymentView(
                id=deployment_id,
                provider=d.provider,
                model=d.model,
                breaker=effective,
                recent_failures=failures.get(deployment_id, 0),
                cooldown_left_s=round(max(0.0, left) / 1000, 1),
                forced_by=forced_by.decode() if held and effective == "open" else None,
            )
        )

    failed = sorted((o for o in everything if o.status >= 400), key=lambda o: o.time_ms, reverse=True)
    return AdminState(
        time=now_ms / 1000,
        front_id=front_id,
        providers=views,
        deployments=deployment_views,
        recent_failures=[
            FailureView(o.time_ms / 1000, o.request_id, o.model, o.deployment, o.status, o.message)
            for o in failed[:MAX_FAILURES]
        ],
        cache=cache_view(),
        keys=await _key_views(redis, rows),
        actions=[a for a in (parse_action(fields) for _, fields in action_entries) if a is not None],
    )


async def _key_views(redis: Redis, rows: dict[str, keys.StoredKey]) -> list[KeyView]:
    """Each live key's spend in its current budget period (one round trip for all)."""
    records = [keys.decode_record(row.record) for row in rows.values() if row.record is not None]
    if not records:
        return []
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        for record in records:
            created = record.created_at.timestamp() if record.created_at is not None else 0.0
            period_s = keys.period_seconds(record.budget_duration) if record.budget_duration else None
            period, _ = keys.budget_period(created, period_s, now)
            pipe.hget(keyspace.key_spend(record.key_id, period), "spend")
        spends = await pipe.execute()
    return [
        KeyView(r.key_id, r.key_alias, round(float(spend or 0), 6), r.max_budget, r.blocked)
        for r, spend in zip(records, spends, strict=True)
    ]
