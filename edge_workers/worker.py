"""One arq worker process for one provider's queue.

`EdgeWorker` is arq's `Worker` with three changes, all for latency:
- an idle worker leaves a ticket, and a miss that takes it hands the job to the worker's inbox
  already claimed for it (edge_workers/handoff.py): no claim round trip;
- it blocks on its inbox and the provider's wake stream (one XREAD) instead of sleeping
  `poll_delay` between polls, so a job is picked up as soon as the front enqueues it; the timed
  poll stays as a fallback;
- it claims a batch of job ids with one Lua script instead of arq's four round trips per job, and
  runs each without arq's two more (edge_workers/runner.py): the claim returns the job and its
  try, the final publication deletes its keys.
Everything else (job keys, tries, health-check key, shutdown) is arq's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from arq import Worker
from arq.utils import timestamp_ms
from arq.worker import func
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_workers import ahead, metrics, runner
from edge_workers.handoff import Commands, Inbox, Ticket
from edge_workers.jobs import MAX_RUNS, WorkerState, cancel_listener, chat_completion
from edge_workers.ledger import Ledger
from edge_workers.providers.bedrock_auth import keep_fresh, missing_credentials
from edge_workers.publishing import load_scripts
from edge_workers.recovery import Recovery
from edge_workers.runner import Claimed
from edge_workers.upstream import new_session
from shared import arq_compat, keyspace, tracing
from shared.arq_compat import CLAIM_LUA
from shared.config import ModelTable, Settings, load_settings
from shared.queue import JOB_FUNCTION, TICKET_RENEW_S, arq_deserialize, arq_serialize
from shared.redis_connect import arq_pool, pooled_client
from shared.redis_memory import warn_about_eviction
from shared.redis_settings import RedisTarget
from shared.resp import LeanRedis, LeanScript, stream_entries
from shared.semantic_config import enabled_groups
from shared.tasks import stop_tasks

if TYPE_CHECKING:
    from edge_workers.semantic.cache import SemanticCache

log = logging.getLogger("edge.worker")

HEALTH_CHECK_INTERVAL_S = 5
_CLAIM = LeanScript(CLAIM_LUA)


class EdgeWorker(Worker):
    """arq's Worker, woken by the wake stream; every use of arq's internals goes through
    `shared.arq_compat`, which `build_worker` checks before a worker starts."""

    # Where its pool connects (REDIS_URL or Sentinel): set by `build_worker`. arq's own
    # `redis_settings` is not used (see shared.redis_connect.arq_pool).
    redis_target: RedisTarget = RedisTarget()

    async def main(self) -> None:
        if self._pool is None:
            self._pool = await arq_pool(
                self.redis_target,
                job_deserializer=self.job_deserializer,
                job_serializer=self.job_serializer,
                default_queue_name=self.queue_name,
                expires_extra_ms=self.expires_extra_ms,
            )
        # The miss's round trips go over lean connections (shared/resp.py): the wake stream's
        # blocking reads on one, claims and answers' publications pipelined on the other, and
        # the inbox's subscription (edge_workers/handoff.py) on a third. A claim is on the wire
        # as soon as its task starts, and a job's request is built while it travels
        # (edge_workers/ahead.py).
        self._wake = LeanRedis(self.pool, blocking=True)
        self.ctx["lean"] = self._lean = LeanRedis(self.pool)
        ticket: Ticket = self.ctx["ticket"]
        self._inbox = Inbox(self.pool, ticket, self._run_handed)
        self._slot_freed = asyncio.Event()
        self.ctx["redis"] = self.pool
        self.ctx["renew_ticket"] = self.ticket_renewal
        if self.on_startup:
            await self.on_startup(self.ctx)
        listening = self.loop.create_task(self._inbox.listen())
        try:
            await self._serve(ticket)
        finally:
            listening.cancel()
            await self._inbox.aclose()

    async def _serve(self, ticket: Ticket) -> None:
        wake_stream = self.ctx["wake_stream"]
        # From the start: claims delete the entries they read, so what is left names jobs nobody
        # has claimed yet (a worker starting during a burst takes its share at once).
        last_id: bytes | str = "0-0"
        log.info("worker ready on queue %s", self.queue_name)
        polled = 0.0
        redis_down = False
        checked = 0.0  # when the inbox's subscription was last checked against the primary
        while True:
            if not self.allow_pick_jobs:  # draining (SIGTERM): claim nothing more
                if not ticket.closed:  # the jobs it brought before are run: they are this worker's
                    with contextlib.suppress(RedisError, OSError):
                        await self._wake.execute(*ticket.withdraw())
                arq_compat.forget_done_tasks(self)
                await asyncio.sleep(0.1)
                continue
            try:
                # arq's poll (due jobs from the sorted set, health check, task clean-up) at least
                # every poll_delay; in between, the wake stream names new jobs to claim directly.
                if time.monotonic() - polled >= self.poll_delay_s:
                    await arq_compat.poll_once(self)
                    polled = time.monotonic()
                free = arq_compat.free_slots(self)
                if free <= 0:
                    # Saturated: read no wake entries we could not start; they wait in the stream
                    # (or another worker takes their jobs) until a slot frees, not for the poll.
                    self._slot_freed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._slot_freed.wait(), self.poll_delay_s)
                    continue
                # The ticket goes out (or is renewed) with this read; once a second, the read
                # also checks that the inbox is subscribed where the ticket is.
                commands: list[tuple[Any, ...]] = []
                commands.extend(self.ticket_renewal())
                check = time.monotonic() - checked >= TICKET_RENEW_S
                if check:
                    commands.append(self._inbox.numsub())
                    checked = time.monotonic()
                free = arq_compat.free_slots(self)  # the ticket's slot too: a claim may take it back
                block_ms = int(self.poll_delay_s * 1000)
                read = ("XREAD", "COUNT", min(free, 1000), "BLOCK", block_ms, "STREAMS", wake_stream, last_id)
                replies = await self._wake.execute_many([*commands, read])
                if check:
                    await self._inbox.check(replies[-2])
                entries = stream_entries(replies[-1])
                if entries:
                    last_id = entries[-1][0]
                    await self.start_jobs(
                        [fields[b"j"] for _, fields in entries if b"j" in fields],
                        [entry_id for entry_id, _ in entries],
                        entries[0][1].get(b"d") if len(entries) == 1 else None,
                    )
            except (RedisError, OSError) as e:
                # Redis went away: keep the jobs in hand running and wait for it to come back.
                if not redis_down:
                    log.warning("Redis unreachable (%s); retrying until it is back", type(e).__name__)
                redis_down = True
                await asyncio.sleep(self.poll_delay_s)
                continue
            if redis_down:
                log.warning("Redis reachable again")
                redis_down = False

    async def start_jobs(
        self, job_ids: list[bytes], wake_entries: Sequence[bytes] = (), data: bytes | None = None
    ) -> None:
        """Claim what fits in the free slots (one Lua call) and run it; arq's poll calls this too
        (without wake entries). The main loop reads no more wake entries than there are slots.
        `data`: the one job's data, from its wake entry: its upstream request is built while the
        claim travels (edge_workers/ahead.py)."""
        free = arq_compat.free_slots(self)
        if free <= 0 or not job_ids:
            return
        ticket: Ticket = self.ctx["ticket"]
        take_back = ""
        if ticket.out and len(job_ids) >= free:  # the slot kept for the ticket's job is wanted
            take_back, ticket.out = ticket.worker_id, False
        elif ticket.out:
            free -= 1
        claim = _CLAIM.start(  # on the wire from here
            self._lean,
            keyspace.claim_keys(self.ctx["provider"], self.ctx["worker_id"]),
            [
                timestamp_ms(),
                arq_compat.in_progress_ms(self),
                arq_compat.WORKER_STATE_TTL_S,
                free,
                len(job_ids),
                take_back,
                *job_ids,
                *wake_entries,
            ],
        )
        state: WorkerState | None = self.ctx.get("edge")
        # Only an idle worker builds ahead: a busy one has other jobs' work to do while a claim
        # travels, and building ahead costs the job's data decoded twice (2-3% of c=64's misses/s).
        if data is None or state is None or len(job_ids) != 1 or arq_compat.free_slots(self) < self.max_jobs:
            reply = await claim
        else:
            ahead.build(state, job_ids[0].decode(), data)  # while the claim travels
            reply = await claim
        claimed = Claimed.from_claim(reply)
        if data is not None and state is not None and not claimed:  # another worker's
            ahead.drop(state, [job_ids[0].decode()])
        await self.run_claimed(claimed)

    async def run_claimed(self, claimed: list[Claimed]) -> None:
        """Start the jobs this worker claimed."""
        held: set[str] = self.ctx["held"]
        for job in claimed:
            held.add(job.job_id)
            await arq_compat.take_slot(self)
            task = self.loop.create_task(runner.run(self, job))
            task.add_done_callback(self._job_done)
            self.tasks[job.job_id] = task

    def _run_handed(self, job: Claimed) -> None:
        """Start a job handed to this worker (its inbox's message), in the slot its ticket kept."""
        metrics.of(self.ctx["provider"]).handed.inc()
        self.ctx["held"].add(job.job_id)
        self.tasks[job.job_id] = self.loop.create_task(self._handed(job))

    async def _handed(self, job: Claimed) -> None:
        try:
            await arq_compat.take_slot(self)  # at once: its ticket kept the slot
        except asyncio.CancelledError:  # stopping: back to the queue, for another worker
            self.ctx["held"].discard(job.job_id)
            await asyncio.shield(runner.finish_job(self, job.job_id, False))
            raise
        try:
            await runner.run(self, job)
        finally:
            self._job_done(None)

    def ticket_renewal(self, freeing: int = 0) -> Commands:
        """The commands that put this worker's ticket out when due (`freeing`: slots a job that
        is answering is about to free); none when not."""
        ticket: Ticket = self.ctx["ticket"]
        return ticket.renewal(arq_compat.free_slots(self) + freeing)

    async def close(self) -> None:
        await super().close()
        if hasattr(self, "_wake"):  # main() ran
            await self._wake.aclose()
            await self._lean.aclose()

    def _job_done(self, _: asyncio.Task[None] | None) -> None:
        arq_compat.release_slot(self)
        self._slot_freed.set()


def _api_keys(models: ModelTable, provider: str) -> dict[str, str]:
    """Variable name -> API key of this worker's provider's deployments, read once at start (a
    worker never calls another provider, so another's missing key is none of its business)."""
    keys = {}
    for name in sorted(models.key_variables(provider)):
        keys[name] = os.environ.get(name, "")
        if not keys[name]:
            log.warning("no API key in $%s", name)
    return keys


def _cache_client(settings: Settings) -> Redis | None:
    """CACHE_REDIS_URL's client, for L2 writes; None when the cache shares the main Redis."""
    if settings.cache_redis is None:
        return None
    timeout = settings.l2_timeout_s * 10  # a write off the answer's path: more patience than a lookup
    return pooled_client(
        settings.cache_redis,
        max_connections=64,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


def _semantic_cache(provider: str, settings: Settings, models: ModelTable) -> SemanticCache | None:
    """The semantic cache when a group this provider serves has it on (the model loads here,
    before the worker starts: a missing model stops it with one line); else None, and nothing
    of it is imported."""
    groups = enabled_groups(models, provider)
    if not groups:
        return None
    if not settings.enable_l2_cache:
        log.warning("semantic_cache ignored: it serves L2 entries and the L2 cache is off")
        return None
    from edge_workers.semantic import load

    semantic = load(provider, groups, os.environ)
    log.info("semantic cache on for %s", ", ".join(f"{g} ({s.mode})" for g, s in sorted(groups.items())))
    return semantic


def build_worker(provider: str, settings: Settings | None = None, models: Any = None) -> EdgeWorker:
    arq_compat.check_arq()  # refuse to start on an arq whose internals moved (see shared.arq_compat)
    if settings is None or models is None:
        settings, models = load_settings()
    held: set[str] = set()  # ids of the jobs this worker claimed and has not answered yet
    job_timeout_s = settings.request_timeout_s + 5
    worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    semantic = _semantic_cache(provider, settings, models)

    async def on_startup(ctx: dict[str, Any]) -> None:
        api_keys = _api_keys(models, provider)
        lacking = {v for v, key in api_keys.items() if not key}
        if provider == "bedrock":  # AWS credentials: botocore's chain, resolved once, off the loop
            lacking |= await asyncio.to_thread(missing_credentials, models.deployments() + models.templates())
            ctx["aws_refresh"] = asyncio.create_task(keep_fresh())
        missing = " ".join(sorted(lacking))
        recovery = Recovery(
            ctx["redis"],
            provider,
            ctx["worker_id"],
            held=held,
            missing_keys=missing,
            in_progress_ms=int((job_timeout_s + 10) * 1000),  # arq's own lease: the job timeout + 10 s
        )
        await recovery.join()
        await load_scripts(ctx["redis"])  # what its pipelines call by hash
        ctx["recovery"] = recovery
        ctx["heartbeat"] = asyncio.create_task(recovery.run())
        ctx["edge"] = state = WorkerState(
            provider=provider,
            worker_id=ctx["worker_id"],
            settings=settings,
            models=models,
            api_keys=api_keys,
            session=new_session(settings.upstream_connect_timeout_s, settings.worker_concurrency),
            redis=ctx["redis"],
            lean=ctx["lean"],
            held=held,
            renew_ticket=ctx["renew_ticket"],
            cache_redis=_cache_client(settings),
            semantic=semantic,
            ledger=Ledger(ctx["lean"]),
        )
        ctx["cancel_listener"] = asyncio.create_task(cancel_listener(state))
        if semantic is not None:  # replays the shared vectors, then follows them
            ctx["semantic_reader"] = asyncio.create_task(semantic.follow(ctx["redis"]))
        await warn_about_eviction(ctx["redis"], state.cache_redis, log)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        names = ("cancel_listener", "heartbeat", "semantic_reader", "aws_refresh")
        tasks = [ctx[name] for name in names if ctx.get(name) is not None]
        for task in await stop_tasks(tasks):
            log.error("background task %s did not stop", task.get_name())
        recovery: Recovery | None = ctx.get("recovery")
        if recovery is not None:
            await recovery.leave()
        state: WorkerState | None = ctx.get("edge")
        if state is not None:
            if state.ledger is not None:
                await state.ledger.flush()
            await state.session.close()
            if state.cache_redis is not None:
                await state.cache_redis.aclose()
            if state.semantic is not None:
                state.semantic.close()

    worker = EdgeWorker(
        # A job runs again only after its worker died (see edge_workers.recovery) or stopped.
        # arq's own limit is one above ours so that `chat_completion` answers the job that has
        # run too often (arq would drop it without a word, leaving its request waiting).
        functions=[func(chat_completion, name=JOB_FUNCTION, max_tries=MAX_RUNS + 1)],
        queue_name=keyspace.queue(provider),
        job_serializer=arq_serialize,
        job_deserializer=arq_deserialize,
        max_jobs=settings.worker_concurrency,
        job_timeout=job_timeout_s,
        keep_result=0,
        poll_delay=settings.worker_poll_interval_s,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        ctx={
            "wake_stream": keyspace.wake(provider),
            "held": held,
            "worker_id": worker_id,
            "ticket": Ticket(provider, worker_id),
            "provider": provider,
        },
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=True,
        # SIGTERM drains: no new job is claimed, those held finish (up to EDGE_DRAIN_S; the rest
        # are cancelled and run again by another worker), then the worker leaves the registry.
        job_completion_wait=settings.drain_s,
    )
    worker.redis_target = settings.redis
    return worker


def run(provider: str, metrics_port: int | None) -> None:
    settings, models = load_settings()
    tracing.setup(f"edge-worker-{provider}")  # ENABLE_TRACING, OTEL_*: off, nothing of it is imported
    logging.getLogger("arq").setLevel(logging.WARNING)  # arq logs every job at INFO
    if settings.enable_metrics and metrics_port:
        try:
            start_http_server(metrics_port, addr=settings.host)
        except OSError as e:
            log.warning("metrics port %d unavailable (%s); metrics not served", metrics_port, e.strerror)
    asyncio.set_event_loop(new_event_loop())
    try:
        worker = build_worker(provider, settings, models)
    except arq_compat.ArqIncompatible as e:
        log.error("worker not started: %s", e)
        raise SystemExit(2) from None
    try:
        worker.run()  # arq handles SIGINT/SIGTERM
    except asyncio.CancelledError:
        pass  # jobs still running at shutdown were cancelled; their requests get 504 or retry


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard] on Linux
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
