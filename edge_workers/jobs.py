"""The one arq job a provider worker runs: answer a chat completion for a waiting front."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import msgspec
from redis.asyncio import Redis

from edge_workers import metrics
from edge_workers.upstream import Outcome, call_upstream
from shared import keyspace
from shared.config import ModelTable, Settings
from shared.errors import error_body
from shared.queue import REPLY_STREAM_MAXLEN, Job, Reply, decode_job, encode_reply

log = logging.getLogger("edge.worker")
_decode_json = msgspec.json.decode
# A reply stream outlives its last write by this long; a front that went away leaves no litter.
REPLY_STREAM_TTL_S = 3600


@dataclass
class WorkerState:
    provider: str
    settings: Settings
    models: ModelTable
    api_keys: dict[str, str]  # deployment id -> key, read from the environment at start
    session: aiohttp.ClientSession
    redis: Redis


async def chat_completion(ctx: dict[str, Any], payload: bytes) -> None:
    state: WorkerState = ctx["edge"]
    job = decode_job(payload)
    started = time.time()
    metrics.QUEUE_WAIT.labels(state.provider).observe(
        max(0.0, started * 1000 - ctx["enqueue_time"].timestamp() * 1000)
    )
    if started >= job.deadline:
        # The front already answered 504; calling upstream now would only cost money.
        metrics.JOBS.labels(state.provider, "expired").inc()
        log.info("request %s: deadline passed in the queue, dropped", job.request_id)
        return
    outcome = await _answer(state, job)
    metrics.UPSTREAM_DURATION.labels(state.provider).observe((time.time() - started) * 1000)
    metrics.JOBS.labels(state.provider, str(outcome.status)).inc()
    if outcome.status >= 400:
        log.info("request %s: answered %d", job.request_id, outcome.status)
    await _publish(state, job, outcome)


async def _answer(state: WorkerState, job: Job) -> Outcome:
    deployment = state.models.by_id(job.deployment_id)
    if deployment is None or deployment.provider != state.provider:
        log.error(
            "request %s: deployment %r is not in this worker's config", job.request_id, job.deployment_id
        )
        return Outcome(502, error_body(502, "the gateway's workers do not know this model's deployment"))
    body = _decode_json(job.body)
    return await call_upstream(
        state.session,
        deployment,
        state.api_keys.get(deployment.id, ""),
        job.upstream_model,
        body,
        job.deadline,
    )


async def _publish(state: WorkerState, job: Job, outcome: Outcome) -> None:
    usage = outcome.usage
    reply = Reply(
        job_id=job.job_id,
        status=outcome.status,
        body=outcome.body,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        retry_after=outcome.retry_after,
    )
    # One round trip: the answer first (the front is waiting on it), then the L2 write.
    async with state.redis.pipeline(transaction=False) as pipe:
        pipe.xadd(job.reply_to, {b"r": encode_reply(reply)}, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
        pipe.expire(job.reply_to, REPLY_STREAM_TTL_S)
        if outcome.status == 200 and job.cache_key is not None and state.settings.enable_l2_cache:
            pipe.set(keyspace.cache_entry(job.cache_key), outcome.body, ex=job.cache_ttl_s)
        await pipe.execute()
    if usage:
        metrics.TOKENS.labels(state.provider, job.upstream_model, "prompt").inc(usage.prompt_tokens)
        metrics.TOKENS.labels(state.provider, job.upstream_model, "completion").inc(usage.completion_tokens)
