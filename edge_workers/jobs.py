"""The one arq job a provider worker runs: answer a chat completion (or an Anthropic Messages
request, or embeddings: `Job.api`) for a waiting front."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_workers import ahead, metrics
from edge_workers import tracing as worker_tracing
from edge_workers.embeddings import call_embeddings
from edge_workers.handoff import Commands
from edge_workers.joblog import job_fields, log_failure
from edge_workers.messages import shape_of
from edge_workers.providers import Adapter
from edge_workers.publishing import Attempt, Publication, ScriptCalls, publish
from edge_workers.semantic.replies import hit_replies
from edge_workers.streaming import AnswerStream, stream_answer
from edge_workers.upstream import Outcome, call_upstream
from shared import arq_compat, keyspace, tracing
from shared.breaker import outcome_of
from shared.commands import CommandSink
from shared.config import Deployment, ModelTable, Settings
from shared.embeddings_wire import EMBEDDINGS_API
from shared.errors import error_body
from shared.flights import fan_out
from shared.pricing import cost_usd
from shared.queue import Job, Reply, decode_job, release_slot
from shared.resp import LeanRedis

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

    from edge_workers.ledger import Ledger
    from edge_workers.semantic.cache import SemanticCache

log = logging.getLogger("edge.worker")
_decode_json = msgspec.json.decode


@dataclass
class WorkerState:
    provider: str
    worker_id: str
    settings: Settings
    models: ModelTable
    api_keys: dict[str, str]  # variable name -> key, read from the environment at start
    session: aiohttp.ClientSession
    redis: Redis
    lean: LeanRedis  # `redis`'s Redis on one lean connection: every answer's publication
    # Ids of the jobs claimed and not yet finally answered (shared with the EdgeWorker, which
    # takes out of Redis's running set whatever a job's end left here).
    held: set[str] = field(default_factory=set)
    # The worker's hand-off ticket (edge_workers/handoff.py): the command that puts it out again,
    # given the slots about to be freed, when it is due; none when not.
    renew_ticket: Callable[[int], Commands] = lambda _: ()
    # The tasks of the jobs calling upstream, by job id, so a front's cancel can stop one (see
    # `cancel_listener`), and the ids of those a cancel stopped (not the worker's shutdown).
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    cancelled: set[str] = field(default_factory=set)
    cache_redis: Redis | None = None  # CACHE_REDIS_URL: the L2 cache's own Redis
    # Upstream requests built while their jobs were being claimed, by job id (edge_workers/ahead.py).
    built_ahead: dict[str, ahead.Ahead] = field(default_factory=dict)
    semantic: SemanticCache | None = None  # set only where a model group has semantic_cache on
    ledger: Ledger | None = None  # successful attempts' records, batched (edge_workers/ledger.py)

    async def publish(self, job: Job, pub: Publication) -> None:
        """Send `pub`. A job's last publication (its answer or its failure: the front waits for
        it) is tried again through a Redis outage, up to FINAL_PUBLISH_PAUSES_S and never past
        the request's deadline. Meanwhile the job stays held: this worker's heartbeat writes its
        lease back if Redis lost it, so fronts keep waiting. A failed chunk is not retried (it
        may have been written: a stream must not repeat itself)."""
        deployment = self.models.by_id(job.deployment_id)
        limited = deployment is not None and deployment.tpm is not None
        breaker = self.models.router.breaker
        if pub.attempt is None:
            usage = keyspace.usage(job.deployment_id, time.time()) if limited else None
            await publish(self.lean, job, pub, self.worker_id, breaker, usage, self.cache_redis)
            return
        # The answer that frees a slot puts this worker's ticket out again, in its round trip.
        renewal = self.renew_ticket(1)
        for pause in (*FINAL_PUBLISH_PAUSES_S, None):
            usage = keyspace.usage(job.deployment_id, time.time()) if limited else None
            try:
                await publish(
                    self.lean,
                    job,
                    pub,
                    self.worker_id,
                    breaker,
                    usage,
                    self.cache_redis,
                    renewal,
                    self.ledger,
                )
                break
            except (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError) as e:
                if pause is None or time.time() + pause >= job.deadline:
                    raise
                log.warning(
                    "request %s: could not publish its answer (%s); retrying",
                    job.request_id,
                    type(e).__name__,
                    extra=job_fields(job),
                )
                await asyncio.sleep(pause)
        self.held.discard(job.job_id)  # the last publication also left the running set

    async def release(self, job: Job) -> None:
        """The job ends without an answer (expired, cancelled): it is no longer this worker's,
        nor does it hold its key's slot and reservation. A flight's followers are told to try on
        their own (a retryable 503), and the flight ends."""
        if job.flight and job.cache_key is not None:
            body = error_body(503, "The identical request this one joined ended unanswered; retrying.")
            reply = Reply(job.job_id, status=503, body=body, retry_after=0.0)
            async with self.redis.pipeline(transaction=False) as pipe:
                calls = ScriptCalls(pipe)
                calls.add(lambda p: fan_out(p, job, [reply], last=True))
                self._finish(pipe, job)
                results = await pipe.execute(raise_on_error=False)
            await calls.after(self.redis, results)
        else:
            async with self.redis.pipeline(transaction=False) as pipe:
                self._finish(pipe, job)
                await pipe.execute()
        self.held.discard(job.job_id)

    def _finish(self, pipe: Pipeline, job: Job) -> None:
        """Queue on `pipe` the end of a job that will not be answered: out of this worker's
        running set, its arq keys gone (edge_workers/runner.py), its key's slot freed."""
        pipe.srem(keyspace.running(self.worker_id), job.job_id)
        arq_compat.finish_job(pipe, keyspace.queue(job.provider), job.job_id)
        if job.slot is not None and job.key_id is not None:
            release_slot(pipe, job.key_id, job.slot)


# A job runs again only when its worker died holding it; after this many runs it is answered
# with an error instead (a request that kills its worker must not take the whole pool down).
MAX_RUNS = 3
# A job's last publication is tried again after these pauses when Redis is unreachable: about
# ten seconds, what a Redis restart or a Sentinel failover takes.
FINAL_PUBLISH_PAUSES_S = (0.1, 0.3, 0.6, 1.0, 2.0, 2.0, 2.0, 2.0)


async def chat_completion(ctx: dict[str, Any], payload: bytes) -> None:
    """arq's job function: every outcome, an unexpected exception included, reaches the front."""
    state: WorkerState = ctx["edge"]
    job = decode_job(payload)
    try:
        run = _run(ctx, state, job)
        await (worker_tracing.consume(ctx, job, run) if tracing.ON else run)
    except asyncio.CancelledError:
        raise
    except (RedisConnectionError, RedisTimeoutError) as e:
        # Redis went away mid-job (a stream's chunks could not be published): not the worker's
        # fault nor the upstream's; a 503 the front retries, or the client after Retry-After.
        log.warning(
            "request %s: Redis failed mid-job (%s)", job.request_id, type(e).__name__, extra=job_fields(job)
        )
        metrics.of(state.provider).jobs("error").inc()
        await _publish_failure(state, job, "The gateway's queue failed while answering this request.", 503)
    except Exception:
        log.exception("request %s: the job failed", job.request_id, extra=job_fields(job, status=502))
        metrics.of(state.provider).jobs("error").inc()
        await _publish_failure(state, job, "The gateway's worker failed while answering this request.")


async def _publish_failure(state: WorkerState, job: Job, message: str, status: int = 502) -> None:
    """An error for the waiting front, retried through a Redis outage (see `WorkerState.publish`);
    given up after that (the front's check for lost jobs, or its deadline, ends the request)."""
    retry_after = 1.0 if status == 503 else None
    reply = Reply(job.job_id, status=status, body=error_body(status, message), retry_after=retry_after)
    try:
        await state.publish(job, Publication([reply], attempt=Attempt("neutral")))
    except (RedisError, OSError) as e:
        log.warning(
            "request %s: could not publish its failure (%s)",
            job.request_id,
            type(e).__name__,
            extra=job_fields(job),
        )


async def _run(ctx: dict[str, Any], state: WorkerState, job: Job) -> None:
    started = time.time()
    metrics.of(state.provider).queue_wait.observe(
        max(0.0, (started - ctx["enqueue_time"].timestamp()) * 1000)
    )
    if started >= job.deadline:
        # The front already answered 504; calling upstream now would only cost money.
        metrics.of(state.provider).jobs("expired").inc()
        log.info("request %s: deadline passed in the queue, dropped", job.request_id, extra=job_fields(job))
        await state.release(job)
        return
    deployment = state.models.by_id(job.deployment_id)
    if deployment is None or deployment.provider != state.provider:
        log.error(
            "request %s: deployment %r is not in this worker's config",
            job.request_id,
            job.deployment_id,
            extra=job_fields(job, status=502),
        )
        body = error_body(502, "the gateway's workers do not know this model's deployment")
        await state.publish(
            job, Publication([Reply(job.job_id, status=502, body=body)], attempt=Attempt("neutral"))
        )
        return
    if ctx.get("job_try", 1) > MAX_RUNS:
        log.error(
            "request %s: its worker died %d times; not running it again",
            job.request_id,
            MAX_RUNS,
            extra=job_fields(job, status=502, attempt=ctx.get("job_try", 1)),
        )
        await _publish_failure(state, job, f"The request was abandoned after {MAX_RUNS} worker failures.")
        return
    if (
        job.stream
        and ctx.get("job_try", 1) > 1
        and await state.redis.exists(keyspace.stream_started(job.job_id))
    ):
        # Its first worker died mid-stream: running it again would send the client its start twice.
        log.warning(
            "request %s: worker died mid-stream; ending the stream", job.request_id, extra=job_fields(job)
        )
        body = error_body(502, "The worker serving this stream stopped; the stream is incomplete.")
        reply = Reply(job.job_id, kind="error", status=502, body=body)
        await state.publish(job, Publication([reply], attempt=Attempt("neutral")))
        return
    # The call runs in the job's own task (a task of its own would cost a loop turn on the
    # miss's path): a client's cancel cancels this task, and `cancelled` tells it from a stop.
    task = asyncio.current_task()
    assert task is not None
    state.running[job.job_id] = task
    try:
        result = await _answer(state, job, deployment)
    except asyncio.CancelledError:
        if job.job_id not in state.cancelled or task.uncancel() > 0:
            raise  # the worker is stopping (or the job's timeout): let arq handle it
        result = "cancelled"  # the client went away: nothing to publish, nothing to cache
        log.info("request %s: cancelled by the client", job.request_id, extra=job_fields(job))
        await state.release(job)
    finally:
        state.running.pop(job.job_id, None)
        state.cancelled.discard(job.job_id)
    if result != "hit-semantic":  # answered without an upstream call
        metrics.of(state.provider).upstream_duration.observe((time.time() - started) * 1000)
    metrics.of(state.provider).jobs(result).inc()


async def _answer(state: WorkerState, job: Job, deployment: Deployment) -> str:
    settings = state.settings
    cache = job.cache_key is not None and settings.enable_l2_cache
    embeddings = job.api == EMBEDDINGS_API  # the provider's embeddings API, not its chat one
    built = ahead.take(state, job)  # its request, built while the worker claimed it
    adapter: Adapter | None
    answer_stream: AnswerStream | None
    if built is not None:
        body, adapter, answer_stream = built.body, built.adapter, built.answer_stream
    else:
        body = _decode_json(job.body)
        adapter, answer_stream = (None, None) if embeddings else shape_of(job, deployment)
    index_entry: Callable[[CommandSink], None] | None = None
    if state.semantic is not None and cache and job.api == "chat":  # chat completions only
        probe = state.semantic.probe(job, body)
        if probe is not None:
            completion = await state.semantic.lookup(job, probe, state.cache_redis or state.redis)
            replies = hit_replies(job, completion) if completion is not None else None
            if replies is not None:
                await state.publish(job, Publication(replies, attempt=Attempt("neutral")))
                return "hit-semantic"
            semantic = state.semantic
            index_entry = functools.partial(semantic.append, job=job, probe=probe)
    api_key = ahead.api_key(state, deployment)
    if job.stream:

        async def send(pub: Publication) -> None:
            if tracing.ON:
                worker_tracing.published(pub)
            if pub.cache_body is not None:  # the completed stream: its index entry goes with it
                pub.also = index_entry
            await state.publish(job, pub)

        streamed = stream_answer(
            state.session,
            deployment,
            api_key,
            job,
            body,
            send,
            cache,
            (settings.max_upstream_body_bytes, settings.max_upstream_line_bytes),
            adapter,
            answer_stream,
            built.request if built is not None else None,
        )
        return await (worker_tracing.stream_call(job, deployment, streamed) if tracing.ON else streamed)
    args = (
        state.session,
        deployment,
        api_key,
        job.upstream_model,
        body,
        job.deadline,
        settings.max_upstream_body_bytes,
    )
    call = (
        call_embeddings(*args)
        if embeddings
        else call_upstream(*args, adapter, built.request if built is not None else None)
    )
    outcome = await (worker_tracing.chat_call(job, deployment, call) if tracing.ON else call)
    # A timeout at a deadline the client chose (x-edge-timeout) is not the upstream's failure.
    judged = outcome.attempted and not (outcome.deadline and job.client_deadline)
    attempt = Attempt(outcome_of(outcome.status, judged), outcome.latency_ms)
    cost = (
        cost_usd(state.provider, job.upstream_model, outcome.usage, deployment)
        if outcome.status == 200
        else 0.0
    )
    cache_body = outcome.body if outcome.status == 200 and cache else None
    also = index_entry if cache_body is not None else None
    reply = _final_reply(job, outcome, cost)
    await state.publish(job, Publication([reply], cache_body, cost, attempt, also=also))
    if outcome.status >= 400:  # after the answer: the log is not in its way
        log_failure(
            job, outcome.status, outcome.body, outcome.latency_ms if outcome.latency_ms >= 0 else None
        )
    if cost:
        metrics.COST.labels(state.provider, job.upstream_model).inc(cost)
    return str(outcome.status)


def _final_reply(job: Job, outcome: Outcome, cost: float) -> Reply:
    usage = outcome.usage
    return Reply(
        job.job_id,
        status=outcome.status,
        body=outcome.body,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        retry_after=outcome.retry_after,
        cost_usd=cost,
    )


async def cancel_listener(state: WorkerState) -> None:
    """Stop upstream calls whose clients went away (fronts PUBLISH their job ids)."""
    while True:
        try:
            async with state.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(keyspace.cancels(state.provider))
                async for message in pubsub.listen():
                    job_id = message["data"].decode()
                    task = state.running.get(job_id)
                    if task is not None and job_id not in state.cancelled:
                        state.cancelled.add(job_id)
                        task.cancel()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.warning("cancel channel failed (%s); resubscribing", type(e).__name__)
            await asyncio.sleep(0.5)
