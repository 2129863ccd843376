"""One arq worker process for one provider's queue.

`EdgeWorker` is arq's `Worker` with two changes, both for latency:
- it blocks on the provider's wake stream (XREAD) instead of sleeping `poll_delay` between
  polls, so a job is picked up as soon as the front enqueues it; the timed poll stays as a
  fallback;
- it claims a batch of job ids with one Lua script instead of arq's four round trips per job.
Everything else (job keys, retries, health-check key, shutdown) is arq's own.
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
from typing import Any

from arq import Worker
from arq.utils import timestamp_ms
from arq.worker import func
from prometheus_client import start_http_server
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_workers.jobs import MAX_RUNS, WorkerState, cancel_listener, chat_completion
from edge_workers.publishing import load_scripts
from edge_workers.recovery import Recovery
from edge_workers.upstream import new_session
from shared import arq_compat, keyspace
from shared.arq_compat import CLAIM_LUA
from shared.config import ModelTable, Settings, load_settings
from shared.queue import JOB_FUNCTION, arq_deserialize, arq_serialize
from shared.redis_connect import arq_pool, pooled_client
from shared.redis_memory import warn_about_eviction
from shared.redis_settings import RedisTarget
from shared.tasks import stop_tasks

log = logging.getLogger("edge.worker")

HEALTH_CHECK_INTERVAL_S = 5


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
        self._claim = self.pool.register_script(CLAIM_LUA)
        self._slot_freed = asyncio.Event()
        self.ctx["redis"] = self.pool
        if self.on_startup:
            await self.on_startup(self.ctx)
        wake_stream = self.ctx["wake_stream"]
        # From the start: claims delete the entries they read, so what is left names jobs nobody
        # has claimed yet (a worker starting during a burst takes its share at once).
        last_id: bytes | str = "0-0"
        log.info("worker ready on queue %s", self.queue_name)
        polled = 0.0
        redis_down = False
        while True:
            if not self.allow_pick_jobs:  # draining (SIGTERM): claim nothing more
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
                block_ms = int(self.poll_delay_s * 1000)
                woke = await self.pool.xread({wake_stream: last_id}, count=min(free, 1000), block=block_ms)
                if woke:
                    entries = woke[0][1]
                    last_id = entries[-1][0]
                    await self.start_jobs(
                        [fields[b"j"] for _, fields in entries if b"j" in fields],
                        [entry_id for entry_id, _ in entries],
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

    async def start_jobs(self, job_ids: list[bytes], wake_entries: Sequence[bytes] = ()) -> None:
        """Claim what fits in the free slots (one Lua call) and run it; arq's poll calls this too
        (without wake entries). The main loop reads no more wake entries than there are slots."""
        free = arq_compat.free_slots(self)
        if free <= 0 or not job_ids:
            return
        held: set[str] = self.ctx["held"]
        claimed = await self._claim(
            keys=[
                self.queue_name,
                arq_compat.IN_PROGRESS_KEY_PREFIX,
                keyspace.running(self.ctx["worker_id"]),
                self.ctx["wake_stream"],
            ],
            args=[
                timestamp_ms(),
                arq_compat.in_progress_ms(self),
                arq_compat.WORKER_STATE_TTL_S,
                free,
                len(job_ids),
                *job_ids,
                *wake_entries,
            ],
        )
        for i in range(0, len(claimed), 2):
            job_id = claimed[i].decode()
            held.add(job_id)
            await arq_compat.take_slot(self)
            task = self.loop.create_task(self._run(job_id, int(float(claimed[i + 1]))))
            task.add_done_callback(self._job_done)
            self.tasks[job_id] = task

    async def _run(self, job_id: str, score: int) -> None:
        try:
            await self.run_job(job_id, score)
        finally:
            # A job that ended without its final publication (arq found it expired or over its
            # tries, or it raised) is still in this worker's running set: take it out.
            if job_id in self.ctx["held"]:
                self.ctx["held"].discard(job_id)
                with contextlib.suppress(RedisError, OSError):
                    await self.pool.srem(keyspace.running(self.ctx["worker_id"]), job_id)  # type: ignore[misc]

    def _job_done(self, _: asyncio.Task[None]) -> None:
        arq_compat.release_slot(self)
        self._slot_freed.set()


def _api_keys(models: ModelTable) -> dict[str, str]:
    """Variable name -> API key, read once at start."""
    keys = {}
    for name in sorted(models.key_variables()):
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


def build_worker(provider: str, settings: Settings | None = None, models: Any = None) -> EdgeWorker:
    arq_compat.check_arq()  # refuse to start on an arq whose internals moved (see shared.arq_compat)
    if settings is None or models is None:
        settings, models = load_settings()
    held: set[str] = set()  # ids of the jobs this worker claimed and has not answered yet
    job_timeout_s = settings.request_timeout_s + 5

    async def on_startup(ctx: dict[str, Any]) -> None:
        api_keys = _api_keys(models)
        missing = " ".join(sorted(v for v in models.key_variables(provider) if not api_keys.get(v)))
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
            held=held,
            cache_redis=_cache_client(settings),
        )
        ctx["cancel_listener"] = asyncio.create_task(cancel_listener(state))
        await warn_about_eviction(ctx["redis"], state.cache_redis, log)

    async def on_shutdown(ctx: dict[str, Any]) -> None:
        tasks = [ctx[name] for name in ("cancel_listener", "heartbeat") if ctx.get(name) is not None]
        for task in await stop_tasks(tasks):
            log.error("background task %s did not stop", task.get_name())
        recovery: Recovery | None = ctx.get("recovery")
        if recovery is not None:
            await recovery.leave()
        state: WorkerState | None = ctx.get("edge")
        if state is not None:
            await state.session.close()
            if state.cache_redis is not None:
                await state.cache_redis.aclose()

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
            "worker_id": f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
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
