"""A cache miss, sent to the workers: attempts, retries with backoff, failover and fallbacks.

Each attempt is one job on the chosen deployment's provider queue. Between attempts the front
waits only when it retries the same deployment (exponential backoff with jitter, at least the
upstream's Retry-After); moving to another deployment or a fallback group happens at once. No
attempt starts if it could not finish before the request's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import msgspec
from redis.exceptions import RedisError
from starlette.types import Receive

from edge_front import metrics
from edge_front import tracing as front_tracing
from edge_front.attempt import L2Hit, Miss, l2_get, queue_unavailable, run_attempt
from edge_front.state import FrontState
from edge_front.streams import LiveStream
from shared import tracing
from shared.config import Deployment
from shared.errors import EdgeError, deadline_error
from shared.queue import Reply
from shared.routing import backoff_s, is_retryable
from shared.wire import ErrorEnvelope

log = logging.getLogger("edge.front")
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


@dataclass
class Served:
    result: Reply | LiveStream | L2Hit  # a Reply is a whole answer or the final error
    deployment: Deployment
    attempts: int
    joined: bool = False  # the answer came from an identical request's upstream call


async def dispatch(state: FrontState, miss: Miss, receive: Receive) -> Served:
    router = state.router
    plan = router.plan(miss.model)
    if miss.lookup and any(router.state(d) != "closed" for d in plan):
        # Routing may take a half-open breaker's probe slot, which an L2 hit would waste.
        miss.lookup = False
        hit = await l2_get(state, miss)
        if hit is not None:
            return Served(hit, plan[0], 0)
    context_switched = False
    last: Served | None = None
    index = 0
    for attempt in range(1, router.settings.retry.max_attempts + 1):
        try:
            choice = _choose(state, plan, index)
            deployment, index = await (
                front_tracing.routing_decision(choice, attempt) if tracing.ON else choice
            )
        except EdgeError:
            if miss.lookup:  # no worker or deployment: an L2 hit is still an answer
                miss.lookup = False
                hit = await l2_get(state, miss)
                if hit is not None:
                    return Served(hit, plan[0], 0)
            if last is None:
                raise
            break  # e.g. the failures so far opened the breakers: the upstream's error says more
        if last is not None:
            retry_after = last.result.retry_after if isinstance(last.result, Reply) else None
            delay = backoff_s(router.settings.retry, attempt - 1, retry_after, router.rng)
            if deployment is not last.deployment:
                delay = 0.0  # failing over: the other deployment owes us no wait
            if time.time() + delay >= miss.deadline:
                break
            await asyncio.sleep(delay)
        run = run_attempt(state, miss, deployment, receive)
        result, joined = await (front_tracing.attempt(run, deployment, attempt) if tracing.ON else run)
        served = Served(result, deployment, attempt, joined)
        if isinstance(result, L2Hit):
            return served
        if isinstance(result, LiveStream) or result.status < 400:
            metrics.ATTEMPTS.labels(deployment.provider, "ok").inc()
            if deployment not in router.models.group(miss.model):
                metrics.FALLBACKS.labels(metrics.model_label(miss.model)).inc()
            return served
        metrics.ATTEMPTS.labels(deployment.provider, str(result.status)).inc()
        last = served
        if not context_switched and _context_too_long(result):
            context_switched, plan, index = True, router.context_plan(miss.model), 0
            if plan:
                continue
            return served
        if not is_retryable(result.status):
            return served
        index += 1
    if last is None:
        raise deadline_error()
    return last


async def _choose(state: FrontState, plan: list[Deployment], start: int) -> tuple[Deployment, int]:
    """The next usable deployment of the plan from `start`, wrapping around; else an error."""
    router = state.router
    refused: EdgeError | None = None
    no_worker = limited = False
    keyless: set[str] = set()
    for offset in range(len(plan)):
        index = (start + offset) % len(plan)
        deployment = plan[index]
        if router.state(deployment) == "open":
            continue
        missing = router.key_missing(deployment)
        if missing is not None:  # every call would be refused upstream: as good as open
            keyless.add(f"${missing} ({deployment.provider})")
            continue
        if router.limits.at_limit(deployment, time.time()):  # its rpm/tpm: like an open breaker
            limited = True
            continue
        refusal = router.admission(deployment.provider)
        if refusal is not None:
            refused = refused or refusal
            continue
        try:
            alive = await state.provider_alive(deployment.provider)
        except (RedisError, OSError) as e:
            raise queue_unavailable(e) from None
        if not alive:
            no_worker = True
            continue
        # Last, because on a half-open breaker this takes one of its few probe slots.
        if await router.available(deployment):
            return deployment, index
    if refused is not None:
        raise refused
    if limited:
        raise router.limits.refusal(time.time())
    if keyless:
        raise EdgeError(
            503,
            f"No deployment for this model has an API key: {', '.join(sorted(keyless))} is not set "
            "on the gateway's workers.",
            code="upstream_key_missing",
        )
    if no_worker:
        providers = ", ".join(sorted({d.provider for d in plan}))
        raise EdgeError(
            503,
            f"No worker is serving provider {providers} right now.",
            code="no_worker",
            headers={"retry-after": "5"},
        )
    cooldown = state.router.settings.breaker.cooldown_s
    raise EdgeError(
        503,
        "Every deployment for this model is unavailable (circuit breakers open).",
        code="all_deployments_unavailable",
        headers={"retry-after": str(max(1, round(cooldown)))},
    )


def _context_too_long(reply: Reply) -> bool:
    if reply.status != 400:
        return False
    try:
        error = _decode_error(reply.body).error
    except msgspec.DecodeError:
        return False
    return error.code == "context_length_exceeded" or "context length" in error.message.lower()
