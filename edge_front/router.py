"""Which deployment answers: routing strategies, shared circuit breakers and queue admission.

The router reads every deployment's breaker (and latency EWMA) and every provider queue's depth
from Redis twice a second in one pipelined round trip, so a routing decision costs no round
trip, except a probe slot on a half-open breaker (rare by design).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import secrets
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_front import metrics
from edge_front.deployment_limits import FIELDS as USAGE_FIELDS
from edge_front.deployment_limits import DeploymentLimits
from shared import keyspace
from shared.breaker import FIELDS, PROBE_LUA, BreakerView
from shared.config import Deployment, ModelTable
from shared.errors import EdgeError
from shared.queue import WORKER_DEAD_AFTER_S

log = logging.getLogger("edge.front")
REFRESH_S = 0.5
_STATE_VALUE = {"closed": 0, "half_open": 1, "open": 2}


class Router:
    def __init__(self, models: ModelTable, redis: Redis, rng: random.Random | None = None) -> None:
        self.models = models
        self.settings = models.router
        self.redis = redis
        self.rng = rng or random.Random()
        self.breakers: dict[str, BreakerView] = {}
        self.depth: dict[str, int] = {}  # jobs waiting for a worker (running ones not counted)
        self.running: dict[str, int] = {}  # jobs the provider's workers hold
        self.live_workers: dict[str, int] = {}
        self.missing_keys: dict[str, set[str]] = {}  # provider -> key variables its workers lack
        self.refreshed_at = 0.0  # monotonic time of the last successful refresh
        # Signs that Redis may have lost what this process waits for (edge_front/lost_jobs.py):
        # refreshes that worked again after failing, and changes of `edge:epoch`.
        self.recoveries = 0
        self.epoch: bytes | None = None
        self.epoch_changes = 0
        self._epoch_token = secrets.token_hex(8)
        self.rate: dict[str, float] = {}  # answers per second, per provider
        self._served: dict[str, tuple[float, int]] = {}
        self._probe = redis.register_script(PROBE_LUA)
        self.limits = DeploymentLimits(models.deployments())

    # ---- plans ---------------------------------------------------------------------------

    def plan(self, model: str) -> list[Deployment]:
        """Deployments to try in order: the model's group by its strategy, then its fallbacks."""
        plan = self.ordered(model)
        for fallback in self.settings.fallbacks.get(model, ()):
            plan.extend(d for d in self.ordered(fallback) if d not in plan)
        return plan

    def context_plan(self, model: str) -> list[Deployment]:
        """Where to go when the prompt was too long for the model (empty: nowhere)."""
        plan: list[Deployment] = []
        for fallback in self.settings.context_window_fallbacks.get(model, ()):
            plan.extend(self.ordered(fallback))
        return plan

    def ordered(self, model: str) -> list[Deployment]:
        group = list(self.models.group(model))
        strategy = self.settings.strategy(model)
        if strategy == "weighted":
            return self._weighted_order(group)
        if strategy == "least-latency":
            # Unmeasured deployments first, so each gets measured.
            return sorted(group, key=lambda d: self._ewma(d) or 0.0)
        if strategy == "lowest-cost":
            return sorted(group, key=lambda d: (d.input_cost_per_1m + d.output_cost_per_1m, d.priority))
        return sorted(group, key=lambda d: d.priority)  # stable: list order breaks ties

    def _weighted_order(self, group: list[Deployment]) -> list[Deployment]:
        order = []
        while group:
            pick = self.rng.choices(group, weights=[max(d.weight, 0.0) or 1e-9 for d in group])[0]
            group.remove(pick)
            order.append(pick)
        return order

    def _ewma(self, deployment: Deployment) -> float | None:
        view = self.breakers.get(deployment.id)
        return view.ewma_ms if view else None

    # ---- availability --------------------------------------------------------------------

    def state(self, deployment: Deployment) -> str:
        view = self.breakers.get(deployment.id, BreakerView())
        return view.effective(time.time() * 1000, self.settings.breaker)

    async def available(self, deployment: Deployment) -> bool:
        """Closed, or half-open with a probe slot taken; never open."""
        state = self.state(deployment)
        if state == "closed":
            return True
        if state == "open":
            return False
        breaker = self.settings.breaker
        args = [int(time.time() * 1000), int(breaker.cooldown_s * 1000), breaker.half_open_probes]
        return bool(await self._probe(keys=[keyspace.breaker(deployment.id)], args=args))

    def admission(self, provider: str) -> EdgeError | None:
        """A refusal if the provider's queue is full: better at once than a timeout later."""
        depth, limit = self.depth.get(provider, 0), self.settings.queue_limit(provider)
        if depth < limit:
            return None
        rate = self.rate.get(provider, 0.0)
        wait = math.ceil((depth - limit + 1) / rate) if rate > 0 else 5
        return EdgeError(
            429,
            f"Provider '{provider}' has {depth} requests queued (limit {limit}); retry later.",
            code="queue_full",
            headers={"retry-after": str(min(max(wait, 1), 60))},
        )

    def key_missing(self, deployment: Deployment) -> str | None:
        """The variable the deployment's key should be in, if its provider's workers lack it."""
        if deployment.api_key or deployment.api_key_env not in self.missing_keys.get(deployment.provider, ()):
            return None
        return deployment.api_key_env

    def _note_missing_keys(self, provider: str, names: set[str]) -> None:
        for name in names - self.missing_keys.get(provider, set()):
            log.warning("provider %s: workers have no $%s; its deployments are skipped", provider, name)
        self.missing_keys[provider] = names

    def provider_available(self, provider: str) -> bool:
        """A live worker, and a deployment whose breaker is not open (with no model asked for yet
        and no config file, none is open)."""
        if not self.live_workers.get(provider, 0):
            return False
        states = [self.state(d) for d in self.models.deployments() if d.provider == provider]
        return not states or any(s != "open" for s in states)

    # ---- shared state ----------------------------------------------------------------------

    async def run(self) -> None:
        failing = False
        while True:
            try:
                await self.refresh()
                if failing:
                    log.warning("router refresh works again")
                    self.recoveries += 1
                failing = False
            except (RedisError, OSError) as e:
                if not failing:  # once per outage, not twice a second
                    log.warning("router refresh failed (%s); keeping the last known state", type(e).__name__)
                failing = True
            await asyncio.sleep(REFRESH_S)

    async def refresh(self) -> None:
        deployments = self.models.deployments()
        providers = sorted(self.models.providers())
        alive_since = int(time.time() * 1000) - int(WORKER_DEAD_AFTER_S * 1000)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keyspace.epoch(), self._epoch_token, nx=True)
            pipe.get(keyspace.epoch())
            for d in deployments:
                pipe.hmget(keyspace.breaker(d.id), list(FIELDS))
            for p in providers:
                pipe.zcard(keyspace.queue(p))
                pipe.get(keyspace.served(p))
                pipe.hvals(keyspace.load(p))
                pipe.zcount(keyspace.workers(p), alive_since, "+inf")
                pipe.hvals(keyspace.missing_keys(p))
            usage = self.limits.begin_read(time.time())
            for key in usage.keys:
                pipe.hmget(key, list(USAGE_FIELDS))
            _, epoch, *results = await pipe.execute()
        if self.epoch is not None and epoch != self.epoch:
            log.warning("Redis lost its data (restarted empty or failed over)")
            self.epoch_changes += 1
        self.epoch = epoch
        self.limits.finish_read(usage, results[len(results) - len(usage.keys) :])
        now = time.monotonic()
        for d, values in zip(deployments, results, strict=False):
            view = BreakerView.from_fields(values)
            self.breakers[d.id] = view
            metrics.BREAKER_STATE.labels(d.id).set(
                _STATE_VALUE[view.effective(time.time() * 1000, self.settings.breaker)]
            )
        for gone in self.breakers.keys() - {d.id for d in deployments}:
            del self.breakers[gone]  # a model nobody asked for lately (no config file)
            metrics.forget(metrics.BREAKER_STATE, gone)
        rest = results[len(deployments) :]
        for i, p in enumerate(providers):
            queued, served_count, held, live, missing = rest[5 * i : 5 * i + 5]
            self._note_missing_keys(p, {v.decode() for value in missing for v in value.split()})
            # arq keeps a running job in its queue until it finishes: only the rest waits.
            running = sum(int(n) for n in held)
            depth = max(0, int(queued) - running)
            self.depth[p], self.running[p], self.live_workers[p] = depth, running, int(live)
            served = int(served_count or 0)
            metrics.QUEUE_DEPTH.labels(p).set(depth)
            metrics.PROVIDER_AVAILABLE.labels(p).set(1 if self.provider_available(p) else 0)
            metrics.LIVE_WORKERS.labels(p).set(int(live))
            if p in self._served:
                then, before = self._served[p]
                sample = max(0, served - before) / max(now - then, 1e-3)
                self.rate[p] = sample if p not in self.rate else 0.7 * self.rate[p] + 0.3 * sample
            self._served[p] = (now, served)
        self.refreshed_at = now
