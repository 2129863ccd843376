"""Everything a worker tells Redis when an answer (or part of one) is ready, in one round trip:
the replies for the waiting front, the L2 entry, the breaker's record of the attempt, the
served counter (the service rate fronts compute Retry-After from), the virtual key's usage
(spend, tokens, requests) and the job's release (its key's slot and reservation included)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from shared import arq_compat, keyspace, outcomes
from shared.admission import window_bounds
from shared.breaker import RECORD_LUA, Outcome, record_args
from shared.commands import CommandList, CommandSink
from shared.costs import with_cost
from shared.flights import FANOUT_LUA, fan_out
from shared.queue import USAGE_TTL_S, Job, Reply, release_slot
from shared.resp import PUSH_FIRST, LeanRedis
from shared.routing import BreakerSettings

if TYPE_CHECKING:
    from edge_workers.ledger import Ledger

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
    also: Callable[[CommandSink], None] | None = None  # more writes for the same round trip (semantic index)


Publish = Callable[[Publication], Awaitable[None]]


async def publish(
    lean: LeanRedis,
    job: Job,
    pub: Publication,
    worker_id: str,
    breaker: BreakerSettings,
    usage_key: str | None = None,  # set when the deployment has a tpm limit
    cache_redis: Redis | None = None,  # CACHE_REDIS_URL's client; None: L2 is in `lean`'s Redis
    then: Sequence[tuple[Any, ...]] = (),  # more commands for the round trip (replies ignored)
    ledger: Ledger | None = None,  # where a successful attempt's records wait; None: written now
) -> None:
    """One round trip on `lean`, every answer's."""
    pipe = CommandList()
    tokens = sum(r.prompt_tokens + r.completion_tokens for r in pub.replies)
    if usage_key is not None and tokens:
        pipe.hincrby(usage_key, "t", tokens)
        pipe.expire(usage_key, USAGE_TTL_S)
    calls = ScriptCalls(pipe)
    # To its front (and, for a flight, to every request that joined it), streamed and pushed.
    calls.add(lambda p: fan_out(p, job, pub.replies, last=pub.attempt is not None))
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
        _book_key_usage(calls, job, pub, job.key_id)
    if pub.also is not None:
        pub.also(pipe)
    if pub.first_chunks:
        pipe.set(keyspace.stream_started(job.job_id), b"1", ex=max(1, int(job.deadline - time.time()) + 60))
    if pub.attempt is not None:
        record = _attempt_record(job, pub, pub.attempt, breaker)
        if ledger is not None and pub.attempt.outcome == "ok" and not job.record_now:
            ledger.add(record)  # written in a later batch (edge_workers/ledger.py)
        else:  # now, and what waited before it
            for script, rest in [*(ledger.take() if ledger is not None else ()), record]:
                calls.add(script)
                rest(pipe)
        pipe.srem(keyspace.running(worker_id), job.job_id)
        arq_compat.finish_job(pipe, keyspace.queue(job.provider), job.job_id)  # (edge_workers/runner.py)
        if job.slot is not None and job.key_id is not None:  # the key's slot and reservation
            release_slot(pipe, job.key_id, job.slot)
    commands = pipe.commands
    # PUSH_FIRST: the answer's push to the waiting front leaves Redis before this reply.
    sent = lean.execute_many([PUSH_FIRST, *commands, *then])
    if cache_write is None:
        results = await sent
    else:
        results, _ = await asyncio.gather(sent, cache_write)
    await calls.after(lean.client, results[1 : 1 + len(commands)])


class ScriptCalls:
    """The script calls queued on a pipeline, by position. Scripts run by EVALSHA (sending a
    script's text with every answer cost measurable throughput), so after Redis restarted or was
    flushed they fail with NOSCRIPT: `after` loads them and runs those calls alone again (the
    rest of the pipeline ran; running it all again would send the replies twice)."""

    def __init__(self, pipe: CommandSink) -> None:
        self.pipe = pipe
        self._at: dict[int, Callable[[CommandSink], object]] = {}

    def add(self, call: Callable[[CommandSink], object]) -> None:
        self._at[len(self.pipe)] = call
        call(self.pipe)

    async def after(self, redis: Redis, results: list[object]) -> None:
        """Raise the pipeline's first error but NOSCRIPT, as `execute` would have; then run
        again the script calls that met NOSCRIPT."""
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, NoScriptError):
                raise result
        failed = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
        if not failed:
            return
        await load_scripts(redis)
        async with redis.pipeline(transaction=False) as pipe:
            for at in failed:
                self._at[at](pipe)
            await pipe.execute()


async def load_scripts(redis: Redis) -> None:
    """Load the scripts a worker's pipelines call by their hash."""
    for lua in (FANOUT_LUA, RECORD_LUA, BOOK_LUA):
        await redis.script_load(lua)


# What one attempt's records add to a pipeline: the breaker's script call (run again after
# NOSCRIPT), then the rest.
Record = tuple[Callable[[CommandSink], object], Callable[[CommandSink], None]]


def _attempt_record(job: Job, pub: Publication, attempt: Attempt, breaker: BreakerSettings) -> Record:
    """The attempt's breaker record, the served counter and its outcome line, as of now."""
    now_ms = int(time.time() * 1000)

    def script(pipe: CommandSink) -> object:
        args = record_args(now_ms, attempt.outcome, breaker, attempt.latency_ms)
        return pipe.evalsha(RECORD_SHA, 1, keyspace.breaker(job.deployment_id), *args)

    def rest(pipe: CommandSink) -> None:
        pipe.incr(keyspace.served(job.provider))
        _record_outcome(pipe, job, pub, attempt, now_ms)

    return script, rest


def _record_outcome(pipe: CommandSink, job: Job, pub: Publication, attempt: Attempt, now_ms: int) -> None:
    """The job's line in its provider's recent outcomes (the operator dashboard's numbers)."""
    final = pub.replies[-1] if pub.replies else None
    status = final.status if final is not None else 502
    fields = outcomes.entry(
        now_ms,
        job.request_id,
        job.upstream_model,
        job.deployment_id,
        status,
        attempt.latency_ms,
        final.body if final is not None else b"",
    )
    pipe.xadd(keyspace.outcomes(job.provider), fields, maxlen=outcomes.OUTCOMES_MAXLEN, approximate=True)


# KEYS: the key's spend hash, its tpm window counter ('' none). ARGV: cost USD, prompt tokens,
# completion tokens, '1' if answered (a request to count), when the spend hash expires (unix s;
# 0: never), when the tpm counter expires. One script instead of up to seven commands: redis-py
# packs each command in Python, and every virtual key's answer pays this.
BOOK_LUA = """
local tokens = tonumber(ARGV[2]) + tonumber(ARGV[3])
if tonumber(ARGV[1]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'spend', ARGV[1]) end
if tonumber(ARGV[2]) > 0 then redis.call('HINCRBY', KEYS[1], 'prompt_tokens', ARGV[2]) end
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBY', KEYS[1], 'completion_tokens', ARGV[3]) end
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'requests', 1) end
if tonumber(ARGV[5]) > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[5]) end
if KEYS[2] ~= '' and tokens > 0 then
  redis.call('INCRBY', KEYS[2], tokens)
  redis.call('EXPIREAT', KEYS[2], ARGV[6])
end
"""
BOOK_SHA = hashlib.sha1(BOOK_LUA.encode()).hexdigest()


def _book_key_usage(calls: ScriptCalls, job: Job, pub: Publication, key_id: str) -> None:
    """Add what this publication's replies used to its key's period and tpm window."""
    assert job.charge is not None
    cost = sum(r.cost_usd for r in pub.replies)
    prompt = sum(r.prompt_tokens for r in pub.replies)
    completion = sum(r.completion_tokens for r in pub.replies)
    # Requests answered upstream: a semantic cache hit is free, like the front's hits.
    answered = any(r.status == 200 and r.kind in ("final", "done") and r.cache == "miss" for r in pub.replies)
    if not (cost or prompt or completion or answered):
        return
    spend = keyspace.key_spend(key_id, job.charge.period)
    tpm, tpm_ends = "", 0
    if job.charge.tpm_window_s and prompt + completion:
        window, ends = window_bounds(time.time(), job.charge.tpm_window_s)
        tpm, tpm_ends = keyspace.key_tpm(key_id, window), int(ends) + 1
    spend_ends = int(job.charge.period_ends) + SPEND_GRACE_S if job.charge.period_ends else 0
    args: list[str | int] = [repr(cost), prompt, completion, "1" if answered else "0", spend_ends, tpm_ends]
    calls.add(lambda pipe: pipe.evalsha(BOOK_SHA, 2, spend, tpm, *args))


async def _write_cache(cache_redis: Redis, key: str, entry: bytes, ttl_s: int) -> None:
    """An L2 write to the cache's own Redis. Best effort: a full or missing cache costs a later
    miss, never this answer."""
    try:
        await cache_redis.set(key, entry, ex=ttl_s)
    except (RedisError, OSError) as e:
        log.warning("could not write the L2 cache (%s)", type(e).__name__)
