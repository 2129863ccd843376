"""Taking over the jobs of a worker that died.

Every worker heartbeats into its provider's registry (a sorted set scored by time) and keeps
the ids of the jobs it holds in a set of its own (added when claimed, removed when answered).
Every live worker also reaps: a worker whose heartbeat is older than `WORKER_DEAD_AFTER_S` is removed
from the registry, and its jobs are put back on the queue for any live worker to run again,
seconds after a crash instead of after arq's in-progress lease (the whole job timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from shared import keyspace
from shared.arq_compat import IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX, REAP_LUA, WORKER_STATE_TTL_S
from shared.queue import WAKE_STREAM_MAXLEN, WORKER_DEAD_AFTER_S, WORKER_HEARTBEAT_S

log = logging.getLogger("edge.worker")


class Recovery:
    def __init__(
        self,
        redis: Redis,
        provider: str,
        worker_id: str,
        load: Callable[[], int] = lambda: 0,
        missing_keys: str = "",
    ) -> None:
        self.redis = redis
        self.provider = provider
        self.worker_id = worker_id
        self.load = load  # how many jobs this worker holds (fronts subtract them from queue depth)
        # The key variables this worker found unset: fronts route around their deployments.
        self.missing_keys = missing_keys
        self._reap = redis.register_script(REAP_LUA)

    async def join(self) -> None:
        """The heartbeat: alive now, holding this many jobs; the running set lives on a while."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(keyspace.workers(self.provider), {self.worker_id: int(time.time() * 1000)})
            pipe.expire(keyspace.workers(self.provider), WORKER_STATE_TTL_S)
            pipe.hset(keyspace.load(self.provider), self.worker_id, str(self.load()))
            pipe.expire(keyspace.load(self.provider), WORKER_STATE_TTL_S)
            pipe.hset(keyspace.missing_keys(self.provider), self.worker_id, self.missing_keys)
            pipe.expire(keyspace.missing_keys(self.provider), WORKER_STATE_TTL_S)
            pipe.expire(keyspace.running(self.worker_id), WORKER_STATE_TTL_S)
            await pipe.execute()

    async def leave(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keyspace.workers(self.provider), self.worker_id)
            pipe.hdel(keyspace.load(self.provider), self.worker_id)
            pipe.hdel(keyspace.missing_keys(self.provider), self.worker_id)
            pipe.delete(keyspace.running(self.worker_id))
            await pipe.execute()

    async def run(self) -> None:
        while True:
            try:
                await self.join()
                await self.reap_dead()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("heartbeat failed (%s)", type(e).__name__)
            await asyncio.sleep(WORKER_HEARTBEAT_S)

    async def reap_dead(self) -> list[str]:
        now_ms = int(time.time() * 1000)
        registry = keyspace.workers(self.provider)
        dead = await self.redis.zrangebyscore(registry, "-inf", now_ms - int(WORKER_DEAD_AFTER_S * 1000))
        requeued: list[str] = []
        for worker in dead:
            worker_id = worker.decode()
            ids = await self._reap(
                keys=[
                    registry,
                    keyspace.queue(self.provider),
                    keyspace.wake(self.provider),
                    keyspace.load(self.provider),
                    keyspace.missing_keys(self.provider),
                ],
                args=[
                    worker_id,
                    now_ms,
                    keyspace.running(worker_id),
                    JOB_KEY_PREFIX,
                    IN_PROGRESS_KEY_PREFIX,
                    WAKE_STREAM_MAXLEN,
                ],
            )
            if ids:
                log.warning("worker %s stopped; re-queued its %d job(s)", worker_id, len(ids))
            requeued.extend(i.decode() for i in ids)
        return requeued
