"""Everything a front process holds for its lifetime, built once at start-up."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_front.l1 import L1Cache
from edge_front.replies import ReplyRouter
from edge_front.reservation import TokenEstimator
from edge_front.router import REFRESH_S, Router
from shared import keyspace
from shared.config import ModelTable, Settings
from shared.flights import FlightCancel, leave
from shared.miss_script import MissScript
from shared.queue import WORKER_DEAD_AFTER_S, Job, cancel, slot_of
from shared.redis_connect import pooled_client, single_client
from shared.resp import LeanRedis
from shared.tasks import stop_tasks

log = logging.getLogger("edge.front")

# Connections a front process may hold: 2 pools of 24 plus the reply reader's one (limit: 64).
POOL_SIZE = 24
LIVENESS_TTL_S = 2.0


@dataclass
class FrontState:
    settings: Settings
    models: ModelTable
    l1: L1Cache
    cache_redis: Redis  # L2 reads: a slow or dead Redis must count as a miss within l2_timeout_s
    queue_redis: Redis  # enqueue, health
    queue_lean: LeanRedis  # queue_redis's Redis on one lean connection: the miss script's
    reader_redis: Redis  # where the one blocking reader of this process's reply stream reads
    replies: ReplyRouter
    router: Router
    front_id: str
    started: int = field(default_factory=lambda: int(time.time()))
    # Ids are a per-process random prefix plus a counter: unique across the cluster, and far
    # cheaper than reading the OS's random source per request (which showed in profiles).
    _id_prefix: str = field(default_factory=lambda: secrets.token_hex(6))
    _id_counter: itertools.count[int] = field(default_factory=itertools.count)
    _live: dict[str, float] = field(default_factory=dict)  # provider -> when last seen alive
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    estimator: TokenEstimator = field(default_factory=TokenEstimator)
    _miss_script: MissScript | None = None
    _flight_cancel: FlightCancel | None = None

    @property
    def miss_script(self) -> MissScript:
        """A miss's one round trip: L2, single-flight, key admission and enqueue."""
        if self._miss_script is None:
            self._miss_script = MissScript(self.queue_lean)
        return self._miss_script

    @classmethod
    def create(cls, settings: Settings, models: ModelTable) -> FrontState:
        front_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        l2_timeout = settings.l2_timeout_s
        name = f"edge-front:{front_id}"  # CLIENT LIST shows which connections are this front's
        # With REDIS_SENTINELS each of the three finds the primary through Sentinel, with its
        # own role's timeouts (shared/redis_connect.py); the pools and their sizes are the same.
        cache_redis = pooled_client(
            settings.cache_redis or settings.redis,  # CACHE_REDIS_URL: the cache's own Redis
            client_name=name,
            max_connections=POOL_SIZE,
            timeout=l2_timeout,
            socket_timeout=l2_timeout,
            socket_connect_timeout=l2_timeout,
        )
        queue_redis = pooled_client(
            settings.redis,
            client_name=name,
            max_connections=POOL_SIZE,
            timeout=2,
            socket_timeout=2,
            socket_connect_timeout=2,
        )
        reader = single_client(
            settings.redis, client_name=name, socket_connect_timeout=2, socket_keepalive=True
        )
        return cls(
            settings=settings,
            models=models,
            l1=L1Cache(settings.l1_max_entries, settings.l1_max_bytes, settings.l1_ttl_s),
            cache_redis=cache_redis,
            queue_redis=queue_redis,
            queue_lean=LeanRedis(queue_redis),
            reader_redis=reader,
            replies=ReplyRouter(LeanRedis(queue_redis), keyspace.replies(front_id), reader),
            router=Router(models, queue_redis),
            front_id=front_id,
        )

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._id_counter):x}"

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self.replies.run(), name="reply-reader"))
        self._tasks.append(asyncio.create_task(self.router.run(), name="router-refresh"))

    def add_task(self, task: Coroutine[Any, Any, None], name: str) -> None:
        """Run `task` for the life of this state (cancelled by `stop`)."""
        self._tasks.append(asyncio.create_task(task, name=name))

    async def stop(self) -> None:
        for task in await stop_tasks(self._tasks):
            log.error("background task %s did not stop", task.get_name())
        try:
            await self.queue_redis.delete(self.replies.stream)
        except Exception:
            pass
        for client in (self.cache_redis, self.queue_redis, self.reader_redis):
            await client.aclose()
        await self.queue_lean.aclose()
        await self.replies.aclose()

    async def cancel(self, job: Job) -> None:
        """Nobody waits for `job` any more: stop or drop it. Best effort, never raises: it runs
        in clean-up paths, some after the response started."""
        try:
            if job.flight:  # followers may still wait for it: then it runs on
                if self._flight_cancel is None:
                    self._flight_cancel = FlightCancel(self.queue_redis)
                await self._flight_cancel(job)
            else:
                await cancel(self.queue_redis, job.provider, [job.job_id], slot_of(job))
        except (TimeoutError, RedisError, OSError) as e:
            log.warning(
                "request %s: could not cancel its job (%s)",
                job.request_id,
                type(e).__name__,
                extra={"request_id": job.request_id, "provider": job.provider},
            )

    async def leave(self, cache_key: str, member: str) -> None:
        """A follower of a flight whose client left. Best effort, never raises."""
        try:
            await leave(self.queue_redis, cache_key, member)
        except (TimeoutError, RedisError, OSError):
            pass  # the flight ends with its job: the set goes with it

    async def provider_alive(self, provider: str) -> bool:
        """Whether some worker serves `provider`: the router's count of live worker heartbeats,
        read twice a second with the rest of its shared state (no round trip). When it counts
        none (it may lag a worker that just started by one refresh), the heartbeats are read
        here, and a live worker found is trusted for 2 s. (Not arq's health-check key: it is
        rewritten only every few seconds, so after Redis restarted empty it would deny live
        workers for as long.)"""
        now = time.monotonic()
        if self.router.live_workers.get(provider) and now - self.router.refreshed_at < 3 * REFRESH_S:
            return True
        seen = self._live.get(provider)
        if seen is not None and now - seen < LIVENESS_TTL_S:
            return True
        alive_since = int(time.time() * 1000) - int(WORKER_DEAD_AFTER_S * 1000)
        if await self.queue_redis.zcount(keyspace.workers(provider), alive_since, "+inf"):
            self._live[provider] = now
            return True
        self._live.pop(provider, None)
        return False
