"""Taking over the jobs of a worker that died.

Every worker heartbeats into its provider's registry (a sorted set scored by time) and keeps
the ids of the jobs it holds in a set of its own (added when claimed, removed when answered).
Every live worker also reaps: a worker whose heartbeat is older than `WORKER_DEAD_AFTER_S` is removed
from the registry, and its jobs are put back on the queue for any live worker to run again,
seconds after a crash instead of after arq's in-progress lease (the whole job timeout).

When Redis loses its data (restarted empty, or a failover to a replica that lagged), a worker
still runs the jobs it held, but Redis no longer knows them: fronts would think them lost and
run them again. So the heartbeat watches `edge:epoch` (see shared/keyspace.py) and, when it
changed or after a heartbeat that failed, writes back what this worker holds: each job's
in-progress lease and its running set. Fronts look for those leases a couple of heartbeats after
they see Redis come back (edge_front/lost_jobs.py), so a job is run again only if no worker
still runs it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Set

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
        held: Set[str] = frozenset(),
        missing_keys: str = "",
        in_progress_ms: int = 600_000,
    ) -> None:
        self.redis = redis
        self.provider = provider
        self.worker_id = worker_id
        # The ids of the jobs this worker runs (fronts subtract their count from queue depth).
        self.held = held
        self.in_progress_ms = in_progress_ms
        # The key variables this worker found unset: fronts route around their deployments.
        self.missing_keys = missing_keys
        self._reap = redis.register_script(REAP_LUA)
        self._token = secrets.token_hex(8)  # this process's candidate for the epoch
        self.epoch: bytes | None = None  # the epoch last seen
        self.heartbeat_failed = False

    async def join(self) -> None:
        """The heartbeat: alive now, holding this many jobs; the running set lives on a while.
        Writes the held jobs back first if Redis lost them."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(keyspace.epoch(), self._token, nx=True)
            pipe.get(keyspace.epoch())
            pipe.zadd(keyspace.workers(self.provider), {self.worker_id: int(time.time() * 1000)})
            pipe.expire(keyspace.workers(self.provider), WORKER_STATE_TTL_S)
            pipe.hset(keyspace.load(self.provider), self.worker_id, str(len(self.held)))
            pipe.expire(keyspace.load(self.provider), WORKER_STATE_TTL_S)
            pipe.hset(keyspace.missing_keys(self.provider), self.worker_id, self.missing_keys)
            pipe.expire(keyspace.missing_keys(self.provider), WORKER_STATE_TTL_S)
            pipe.expire(keyspace.running(self.worker_id), WORKER_STATE_TTL_S)
            pipe.expire(keyspace.idle(self.provider), WORKER_STATE_TTL_S)  # tickets (edge_workers/handoff.py)
            epoch = (await pipe.execute())[1]
        lost = self.epoch is not None and epoch != self.epoch
        if lost:
            log.warning(
                "Redis lost its data (restarted empty or failed over); re-registering %d job(s)",
                len(self.held),
            )
        if (lost or self.heartbeat_failed) and self.held:
            await self.reassert()
        self.epoch, self.heartbeat_failed = epoch, False

    async def reassert(self) -> None:
        """Write back the in-progress lease of every job this worker runs, and its running set,
        so no front or worker takes them for lost (they may be gone with Redis's data)."""
        held = list(self.held)
        if not held:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in held:
                pipe.set(IN_PROGRESS_KEY_PREFIX + job_id, b"1", px=self.in_progress_ms)
            pipe.sadd(keyspace.running(self.worker_id), *held)
            pipe.expire(keyspace.running(self.worker_id), WORKER_STATE_TTL_S)
            await pipe.execute()

    async def leave(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keyspace.workers(self.provider), self.worker_id)
            pipe.hdel(keyspace.load(self.provider), self.worker_id)
            pipe.hdel(keyspace.missing_keys(self.provider), self.worker_id)
            pipe.delete(keyspace.running(self.worker_id))
            pipe.zrem(keyspace.idle(self.provider), self.worker_id)
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
                self.heartbeat_failed = True
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
                    keyspace.idle(self.provider),
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
