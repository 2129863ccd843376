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

from arq.constants import in_progress_key_prefix, job_key_prefix
from redis.asyncio import Redis

from shared import keyspace
from shared.queue import WORKER_DEAD_AFTER_S, WORKER_HEARTBEAT_S

log = logging.getLogger("edge.worker")


# KEYS[1] registry, KEYS[2] queue, KEYS[3] wake stream; ARGV: dead worker id, now_ms, running-set key.
# Atomic, so when several workers reap the same dead one, only the first re-queues its jobs.
_REAP_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {} end
local jobs = redis.call('SMEMBERS', ARGV[3])
local requeued = {}
for _, id in ipairs(jobs) do
  if redis.call('EXISTS', ARGV[4] .. id) == 1 then
    redis.call('DEL', ARGV[5] .. id)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 10000, '*', 'j', id)
    requeued[#requeued + 1] = id
  end
end
redis.call('DEL', ARGV[3])
return requeued
"""


class Recovery:
    def __init__(self, redis: Redis, provider: str, worker_id: str) -> None:
        self.redis = redis
        self.provider = provider
        self.worker_id = worker_id
        self._reap = redis.register_script(_REAP_LUA)

    async def join(self) -> None:
        await self.redis.zadd(keyspace.workers(self.provider), {self.worker_id: int(time.time() * 1000)})

    async def leave(self) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keyspace.workers(self.provider), self.worker_id)
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
                keys=[registry, keyspace.queue(self.provider), keyspace.wake(self.provider)],
                args=[worker_id, now_ms, keyspace.running(worker_id), job_key_prefix, in_progress_key_prefix],
            )
            if ids:
                log.warning("worker %s stopped; re-queued its %d job(s)", worker_id, len(ids))
            requeued.extend(i.decode() for i in ids)
        return requeued
