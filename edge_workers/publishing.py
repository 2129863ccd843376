"""Everything a worker tells Redis when an answer (or part of one) is ready, in one round trip:
the replies for the waiting front, the L2 entry, the breaker's record of the attempt, the
served counter (the service rate fronts compute Retry-After from), the virtual key's usage
(spend, tokens, requests) and the job's release (its key's slot and reservation included)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, RedisError

from shared import keyspace, outcomes
from shared.admission import window_bounds
from shared.breaker import RECORD_LUA, Outcome, record_args
from shared.costs import with_cost
from shared.flights import REPLY_STREAM_TTL_S, fan_out, load_scripts
from shared.queue import REPLY_STREAM_MAXLEN, USAGE_TTL_S, Job, Reply, encode_reply, release_slot
from shared.routing import BreakerSettings

log = logging.getLogger("edge.worker")

# EVALSHA, not EVAL: sending the script's text with every answer cost measurable throughput.
RECORD_SHA = hashlib.sha1(RECORD_LUA.encode()).hexdigest()
# A key's spend hash outlives its budget period by this long (late answers still book into it).
SPEND_GRACE_S = 86400


@dataclass
class Attempt:
    """What one upstream attempt says about its deployment, recorded with the job's last reply."""

    outcome: Outcome
    latency_ms: float = -1.0  # time to the answer (or first byte of a stream); -1 if unknown


@dataclass
class Publication:
    replies: list[Reply]
    cache_body: bytes | None = None  # the completion to store in L2
    cache_cost: float = 0.0  # stored in front of it, so a hit knows what it saved
    attempt: Attempt | None = None  # set on a job's last publication only
    first_chunks: bool = False  # a stream's first chunks: a re-run must not repeat them


Publish = Callable[[Publication], Awaitable[None]]


async def publish(
    redis: Redis,
    job: Job,
    pub: Publication,
    worker_id: str,
    breaker: BreakerSettings,
    usage_key: str | None = None,  # set when the deployment has a tpm limit
    cache_redis: Redis | None = None,  # CACHE_REDIS_URL's client; None: L2 is in `redis`
) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        tokens = sum(r.prompt_tokens + r.completion_tokens for r in pub.replies)
        if usage_key is not None and tokens:
            pipe.hincrby(usage_key, "t", tokens)
            pipe.expire(usage_key, USAGE_TTL_S)
        scripts: dict[int, list[str]] = {}  # where the breaker's record is in the pipeline
        if job.flight and job.cache_key is not None:  # to every request that joined it too
            fan_out(pipe, job, pub.replies, last=pub.attempt is not None)
        else:
            for reply in pub.replies:
                pipe.xadd(
                    job.reply_to, {b"r": encode_reply(reply)}, maxlen=REPLY_STREAM_MAXLEN, approximate=True
                )
            pipe.expire(job.reply_to, REPLY_STREAM_TTL_S)
        cache_write: Awaitable[None] | None = None
        if pub.cache_body is not None and job.cache_key is not None:
            entry = with_cost(pub.cache_cost, pub.cache_body, job.cache_ttl_s)
            if cache_redis is None:
                pipe.set(keyspace.cache_entry(job.cache_key), entry, ex=job.cache_ttl_s)
            else:  # the cache's own Redis: written alongside, in parallel
                cache_write = _write_cache(
                    cache_redis, keyspace.cache_entry(job.cache_key), entry, job.cache_ttl_s
                )
        if job.key_id is not None and job.charge is not None:
            _book_key_usage(pipe, job, pub, job.key_id)
        if pub.first_chunks:
            pipe.set(
                keyspace.stream_started(job.job_id), b"1", ex=max(1, int(job.deadline - time.time()) + 60)
            )
        record: list[str] = []
        if pub.attempt is not None:
            args = record_args(int(time.time() * 1000), pub.attempt.outcome, breaker, pub.attempt.latency_ms)
            record = [keyspace.breaker(job.deployment_id), *args]
            scripts[len(pipe)] = record
            pipe.evalsha(RECORD_SHA, 1, *record)
            pipe.incr(keyspace.served(job.provider))
            _record_outcome(pipe, job, pub, pub.attempt)
            pipe.srem(keyspace.running(worker_id), job.job_id)
            if job.slot is not None and job.key_id is not None:  # the key's slot and reservation
                release_slot(pipe, job.key_id, job.slot)
        if cache_write is None:
            results = await pipe.execute(raise_on_error=False)
        else:
            results, _ = await asyncio.gather(pipe.execute(raise_on_error=False), cache_write)
        await after_publish(redis, results, job, pub, scripts)


async def after_publish(
    redis: Redis, results: list[object], job: Job, pub: Publication, scripts: dict[int, list[str]]
) -> None:
    """Raise the pipeline's first error, as `execute` would have, except NOSCRIPT: Redis
    restarted or was flushed since this worker loaded its scripts. Those script calls alone
    run again, loaded (the rest of the pipeline ran; running it all again would send the
    replies twice)."""
    failed = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, NoScriptError):
            raise result
    if not failed:
        return
    await load_scripts(redis)
    for at in failed:
        if at in scripts:  # the breaker's record
            await redis.register_script(RECORD_LUA)(keys=scripts[at][:1], args=scripts[at][1:])
        else:  # the flight's fan-out
            async with redis.pipeline(transaction=False) as pipe:
                fan_out(pipe, job, pub.replies, last=pub.attempt is not None)
                await pipe.execute()


def _record_outcome(pipe: Pipeline, job: Job, pub: Publication, attempt: Attempt) -> None:
    """The job's line in its provider's recent outcomes (the operator dashboard's numbers)."""
    final = pub.replies[-1] if pub.replies else None
    status = final.status if final is not None else 502
    fields = outcomes.entry(
        int(time.time() * 1000),
        job.request_id,
        job.upstream_model,
        job.deployment_id,
        status,
        attempt.latency_ms,
        final.body if final is not None else b"",
    )
    pipe.xadd(keyspace.outcomes(job.provider), fields, maxlen=outcomes.OUTCOMES_MAXLEN, approximate=True)  # type: ignore[arg-type]


def _book_key_usage(pipe: Pipeline, job: Job, pub: Publication, key_id: str) -> None:
    """Add what this publication's replies used to its key's period and tpm window."""
    assert job.charge is not None
    cost = sum(r.cost_usd for r in pub.replies)
    prompt = sum(r.prompt_tokens for r in pub.replies)
    completion = sum(r.completion_tokens for r in pub.replies)
    answered = any(r.status == 200 and r.kind in ("final", "done") for r in pub.replies)
    if not (cost or prompt or completion or answered):
        return
    spend = keyspace.key_spend(key_id, job.charge.period)
    if cost:
        pipe.hincrbyfloat(spend, "spend", cost)
    if prompt:
        pipe.hincrby(spend, "prompt_tokens", prompt)
    if completion:
        pipe.hincrby(spend, "completion_tokens", completion)
    if answered:
        pipe.hincrby(spend, "requests", 1)
    if job.charge.period_ends:
        pipe.expireat(spend, int(job.charge.period_ends) + SPEND_GRACE_S)
    if job.charge.tpm_window_s and prompt + completion:
        window, ends = window_bounds(time.time(), job.charge.tpm_window_s)
        tpm = keyspace.key_tpm(key_id, window)
        pipe.incrby(tpm, prompt + completion)
        pipe.expireat(tpm, int(ends) + 1)


async def _write_cache(cache_redis: Redis, key: str, entry: bytes, ttl_s: int) -> None:
    """An L2 write to the cache's own Redis. Best effort: a full or missing cache costs a later
    miss, never this answer."""
    try:
        await cache_redis.set(key, entry, ex=ttl_s)
    except (RedisError, OSError) as e:
        log.warning("could not write the L2 cache (%s)", type(e).__name__)
