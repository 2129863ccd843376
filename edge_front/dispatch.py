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
from edge_front.http import ClientDisconnected
from edge_front.reservation import worst_case_usd
from edge_front.state import FrontState
from edge_front.streams import LiveStream, watch_disconnect
from shared.admission import KeyLimits
from shared.config import Deployment
from shared.errors import EdgeError, deadline_error
from shared.queue import Job, JobKind, KeyCharge, Reply, enqueue
from shared.routing import backoff_s, is_retryable
from shared.wire import ErrorEnvelope

log = logging.getLogger("edge.front")
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


@dataclass
class Miss:
    """What every attempt of one request shares."""

    request_id: str
    model: str
    body: bytes
    cache_key: str | None
    stream: bool
    include_usage: bool
    deadline: float
    client_deadline: bool = False  # set by x-edge-timeout below the configured limit
    key_id: str | None = None  # the virtual key's public id (None: the master key)
    charge: KeyCharge | None = None  # where the worker books a virtual key's usage
    limits: KeyLimits | None = None  # the key's limits and budget, when it has any
    # The request's estimated prompt and most completion tokens (only when the key reserves).
    estimate: tuple[int, int] = (0, 0)
    kind: JobKind = "chat"  # what the workers ask the upstream for


@dataclass
class Served:
    result: Reply | LiveStream  # a Reply is a whole answer or the final error
    deployment: Deployment
    attempts: int


async def dispatch(state: FrontState, miss: Miss, receive: Receive) -> Served:
    router = state.router
    plan = router.plan(miss.model)
    context_switched = False
    last: Served | None = None
    index = 0
    for attempt in range(1, router.settings.retry.max_attempts + 1):
        try:
            deployment, index = await _choose(state, plan, index)
        except EdgeError:
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
        result = await _attempt(state, miss, deployment, receive)
        served = Served(result, deployment, attempt)
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
            raise _queue_unavailable(e) from None
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


def _queue_unavailable(e: BaseException) -> EdgeError:
    return EdgeError(
        503, f"The gateway's queue is unavailable ({type(e).__name__}).", headers={"retry-after": "1"}
    )


def _context_too_long(reply: Reply) -> bool:
    if reply.status != 400:
        return False
    try:
        error = _decode_error(reply.body).error
    except msgspec.DecodeError:
        return False
    return error.code == "context_length_exceeded" or "context length" in error.message.lower()


def _job(state: FrontState, miss: Miss, deployment: Deployment) -> Job:
    return Job(
        job_id=state.new_id(),  # unique even when clients reuse their request ids
        request_id=miss.request_id,
        reply_to=state.replies.stream,
        provider=deployment.provider,
        deployment_id=deployment.id,
        upstream_model=miss.model if deployment.model == "*" else deployment.model,
        body=miss.body,
        deadline=miss.deadline,
        cache_key=miss.cache_key,
        cache_ttl_s=state.settings.l2_ttl_s,
        stream=miss.stream,
        client_deadline=miss.client_deadline,
        key_id=miss.key_id,
        charge=miss.charge,
        kind=miss.kind,
    )


async def _attempt(
    state: FrontState, miss: Miss, deployment: Deployment, receive: Receive
) -> Reply | LiveStream:
    job = _job(state, miss, deployment)
    limits = miss.limits
    if limits is not None and limits.budget is not None and not limits.admitted:
        limits.reserve_usd = worst_case_usd(deployment, job.upstream_model, *miss.estimate)
    if miss.stream:
        return await _start_stream(state, job, receive, miss.include_usage, miss.limits)
    return await _ask(state, job, miss.limits)


async def _submit(state: FrontState, job: Job, limits: KeyLimits | None) -> Job:
    """Enqueue `job` (with a key's limits, admitted and charged in the same round trip);
    returns it as enqueued. Raises EdgeError: 429 at a key's limit, 503 without Redis."""
    usage = state.router.limits.count(job.deployment_id, time.time())
    try:
        if limits is not None:
            return await state.admission.enqueue(job, limits, usage)
        await enqueue(state.queue_redis, job, usage)
        return job
    except (TimeoutError, RedisError, OSError) as e:
        raise _queue_unavailable(e) from None


async def _ask(state: FrontState, job: Job, limits: KeyLimits | None) -> Reply:
    """A non-streamed answer: one reply."""
    future = state.replies.expect(job.job_id, job)
    metrics.WAITING.inc()
    try:
        state.replies.enqueued_as(await _submit(state, job, limits))
        return await asyncio.wait_for(future, job.deadline - time.time())
    except TimeoutError:
        raise deadline_error() from None
    finally:
        metrics.WAITING.dec()
        state.replies.forget(job.job_id)


async def _start_stream(
    state: FrontState,
    job: Job,
    receive: Receive,
    include_usage: bool,
    limits: KeyLimits | None = None,
) -> Reply | LiveStream:
    """Wait for a streamed answer's first reply: a failure before it is a plain reply (retryable)."""
    replies = state.replies.expect_stream(job.job_id, job)
    watcher = asyncio.create_task(watch_disconnect(receive, replies))
    first: Reply | None = None
    try:
        job = await _submit(state, job, limits)  # as enqueued: a cancel frees its slot too
        state.replies.enqueued_as(job)
        first = await asyncio.wait_for(replies.get(), job.deadline - time.time())
    except TimeoutError:
        raise deadline_error() from None
    except asyncio.CancelledError:
        await asyncio.shield(state.cancel(job))  # the server is stopping this request
        raise
    finally:
        if first is None or first.kind != "chunk":  # no stream to hand over: clean up here
            watcher.cancel()
            state.replies.forget(job.job_id)
    if first is None:  # the client left while waiting for the first token
        await state.cancel(job)
        metrics.CLIENT_DISCONNECTS.inc()
        raise ClientDisconnected
    if first.kind != "chunk":
        return first
    return LiveStream(job, replies, first, include_usage, job.cache_key, watcher)
