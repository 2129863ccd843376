"""One attempt of a cache miss: its job, the miss script's round trip (the L2 entry, a flight
joined, or the job enqueued), and the wait for its answer, with what ends a wait early (the
client leaving, the flight ending unanswered, the deadline).

edge_front/dispatch.py decides which attempts a request makes; this module makes one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import msgspec
from redis.exceptions import RedisError
from starlette.types import Receive

from edge_front import metrics
from edge_front import tracing as front_tracing
from edge_front.cache_lookup import read_l2
from edge_front.http import ClientDisconnected
from edge_front.reservation import worst_case_usd
from edge_front.state import FrontState
from edge_front.streams import LiveStream, watch_disconnect
from shared import keyspace, tracing
from shared.admission import KeyLimits
from shared.config import Deployment
from shared.errors import EdgeError, deadline_error, error_body
from shared.flights import follower_member
from shared.miss_script import MissResult
from shared.queue import Job, KeyCharge, Reply


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
    # Each attempt's script returns the L2 entry if there is one (L2 in the queue's Redis): a
    # retry may find what an identical request's retry just stored.
    lookup: bool = False
    # The key it looks up: its cache key, even when its answer is not to be stored (no-store).
    lookup_key: str | None = None
    flight: bool = False  # joins an identical request in flight, or leads one (shared/flights.py)
    cache_ttl_s: int | None = None  # how long L2 keeps the answer (None: EDGE_L2_TTL)
    oldest: float | None = None  # max-age: the oldest store time (unix) of an L2 entry it accepts
    api: str = "chat"  # the shape the answer is delivered in (shared.queue.Job.api)
    upstream_headers: dict[str, str] | None = None  # the client's anthropic-* headers, allow-listed
    skip_lookup: bool = False  # Cache-Control: no-cache (workers skip their semantic cache too)


@dataclass
class L2Hit:
    """The miss script found the answer in L2 after all (`entry`: as stored, cost in front)."""

    entry: bytes


# A request that joined a flight gives up on it this long after the flight's own deadline (its
# job then ended unanswered: expired, or lost with its worker) and tries on its own.
FLIGHT_GRACE_S = 1.0
# What the disconnect watcher hands a non-streamed request's wait when its client leaves.
_DISCONNECTED = Reply("", kind="error", status=499)


def queue_unavailable(e: BaseException) -> EdgeError:
    return EdgeError(
        503, f"The gateway's queue is unavailable ({type(e).__name__}).", headers={"retry-after": "1"}
    )


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
        cache_ttl_s=miss.cache_ttl_s or state.settings.l2_ttl_s,
        stream=miss.stream,
        client_deadline=miss.client_deadline,
        key_id=miss.key_id,
        charge=miss.charge,
        flight=miss.flight,
        api=miss.api,
        upstream_headers=miss.upstream_headers,
        skip_lookup=miss.skip_lookup,
        trace=front_tracing.job_context() if tracing.ON else None,
        record_now=state.router.state(deployment) != "closed",
    )


async def run_attempt(
    state: FrontState, miss: Miss, deployment: Deployment, receive: Receive
) -> tuple[Reply | LiveStream | L2Hit, bool]:
    """One attempt's result, and whether it joined an identical request in flight."""
    job = _job(state, miss, deployment)
    limits = miss.limits
    if limits is not None and limits.budget is not None and not limits.admitted:
        limits.reserve_usd = worst_case_usd(deployment, job.upstream_model, *miss.estimate)
    if miss.stream:
        return await _start_stream(state, miss, job, receive)
    return await _ask(state, miss, job, receive)


async def _submit(state: FrontState, miss: Miss, job: Job) -> MissResult:
    """Run the miss script for `job`: the L2 entry (first attempt only), a flight joined, or the
    job enqueued (with a key's limits, admitted and charged). Raises EdgeError: 429 at a key's
    limit, 503 without Redis."""
    usage = state.router.limits.count(job.deployment_id, time.time())
    lookup = keyspace.cache_entry(miss.lookup_key) if miss.lookup and miss.lookup_key else None
    member = follower_member(state.replies.stream, job.job_id) if miss.flight else None
    try:
        result = await state.miss_script.run(job, miss.limits, usage, lookup, member, miss.oldest)
    except (TimeoutError, RedisError, OSError) as e:
        raise queue_unavailable(e) from None
    if lookup is not None and result.entry is None:
        metrics.CACHE_MISSES.labels("l2").inc()
    if result.job is not None:
        state.replies.enqueued_as(result.job)
    elif usage is not None:  # nothing was sent to the deployment
        state.router.limits.uncount(job.deployment_id, time.time())
    return result


def _wait_s(job: Job, result: MissResult) -> float:
    """How long to wait for the answer: a follower no longer than its flight could last."""
    if result.leader is None:
        return job.deadline - time.time()
    return min(job.deadline, result.leader_deadline + FLIGHT_GRACE_S) - time.time()


def _flight_lost(job: Job) -> Reply:
    """The flight this request joined ended without a word: retried as its own attempt."""
    body = error_body(503, "The identical request this one joined did not finish; retrying.")
    return Reply(job.job_id, status=503, body=body, retry_after=0.0)


# A non-streamed request starts watching for its client's disconnect only after waiting this
# long: a task per request cost the front ~10 % of its CPU in profiles, and most misses are
# answered sooner (a disconnect then would save nothing).
WATCH_AFTER_S = 0.2


class _DisconnectWatch:
    """Ends a non-streamed request's wait when its client disconnects (from WATCH_AFTER_S on)."""

    __slots__ = ("_handle", "_task")

    def __init__(self, receive: Receive, future: asyncio.Future[Reply]) -> None:
        self._task: asyncio.Task[None] | None = None
        self._handle = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start, receive, future)

    def _start(self, receive: Receive, future: asyncio.Future[Reply]) -> None:
        self._task = asyncio.get_running_loop().create_task(_watch(receive, future))

    def stop(self) -> None:
        self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


async def _watch(receive: Receive, future: asyncio.Future[Reply]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    if not future.done():
        future.set_result(_DISCONNECTED)


async def _ask(state: FrontState, miss: Miss, job: Job, receive: Receive) -> tuple[Reply | L2Hit, bool]:
    """A non-streamed answer: one reply. A client that leaves cancels the upstream call, unless
    others joined it."""
    future = state.replies.expect(job.job_id, job)
    watcher = _DisconnectWatch(receive, future)
    metrics.WAITING.inc()
    try:
        result = await _submit(state, miss, job)
        if result.entry is not None:
            return L2Hit(result.entry), False
        joined = result.leader is not None
        try:
            # asyncio.timeout, not wait_for: wait_for's own waiter costs the wake-up a loop turn.
            async with asyncio.timeout(_wait_s(job, result)):
                reply = await future
        except TimeoutError:
            if joined and time.time() < job.deadline:
                return _flight_lost(job), True
            raise deadline_error() from None
        if reply is _DISCONNECTED:
            await _abandon(state, miss, result, job)
            metrics.CLIENT_DISCONNECTS.inc()
            raise ClientDisconnected
        if reply.kind != "final":  # a streamed flight's end: `done` holds the whole completion
            reply = msgspec.structs.replace(reply, kind="final")
        return reply, joined
    finally:
        watcher.stop()
        metrics.WAITING.dec()
        state.replies.forget(job.job_id)


async def _abandon(state: FrontState, miss: Miss, result: MissResult, job: Job) -> None:
    """Nobody waits for this attempt any more: leave its flight, or cancel its job."""
    if result.leader is not None and miss.cache_key is not None:
        await state.leave(miss.cache_key, follower_member(state.replies.stream, job.job_id))
    elif result.job is not None:
        await state.cancel(result.job)


async def _start_stream(
    state: FrontState, miss: Miss, job: Job, receive: Receive
) -> tuple[Reply | LiveStream | L2Hit, bool]:
    """Wait for a streamed answer's first reply: a failure before it is a plain reply (retryable)."""
    replies = state.replies.expect_stream(job.job_id, job)
    watcher = asyncio.create_task(watch_disconnect(receive, replies))
    first: Reply | None = None
    result = MissResult()
    try:
        result = await _submit(state, miss, job)  # as enqueued: a cancel frees its slot too
        if result.entry is not None:
            return L2Hit(result.entry), False
        async with asyncio.timeout(_wait_s(job, result)):
            first = await replies.get()
    except TimeoutError:
        if result.leader is not None and time.time() < job.deadline:
            return _flight_lost(job), True
        raise deadline_error() from None
    except asyncio.CancelledError:
        await asyncio.shield(_abandon(state, miss, result, job))  # the server is stopping this request
        raise
    finally:
        if first is None or first.kind != "chunk":  # no stream to hand over: clean up here
            watcher.cancel()
            state.replies.forget(job.job_id)
    joined = result.leader is not None
    if first is None:  # the client left while waiting for the first token
        await _abandon(state, miss, result, job)
        metrics.CLIENT_DISCONNECTS.inc()
        raise ClientDisconnected
    if first.kind != "chunk":
        if first.kind == "done":  # joined a streamed flight that had ended: its whole answer
            first = msgspec.structs.replace(first, kind="final")
        return first, joined
    live = LiveStream(result.job or job, replies, first, miss.include_usage, job.cache_key, watcher)
    if joined and miss.cache_key is not None:
        live.follow = (miss.cache_key, follower_member(state.replies.stream, job.job_id))
    return live, joined


async def l2_get(state: FrontState, miss: Miss) -> L2Hit | None:
    """L2 on its own (when the miss script will not look)."""
    if miss.lookup_key is None:
        return None
    entry = await read_l2(state, miss.lookup_key, miss.oldest)
    return None if entry is None else L2Hit(entry)
