"""Running one claimed job: what arq's `Worker.run_job` does, without its two round trips.

arq reads a job and counts its try in one transaction before the job runs, and deletes its keys
in another after it. Here the claim script (`shared.arq_compat.CLAIM_LUA`) already returned each
job's data and counted try, and a job's final publication deletes its keys in the round trip
that answers it (edge_workers/publishing.py): a miss costs the worker two round trips fewer.
Only a job that ends without one (expired, cancelled, failed before answering) is finished here.

arq's semantics are kept: the try count and its limit, the job timeout, `ctx` (`job_id`,
`job_try`, `enqueue_time`, `score`), the counters its health check reports, and a job cancelled
by the worker's shutdown is left in the queue without its lease, so another worker runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from arq import Worker
from arq.utils import ms_to_datetime
from redis.exceptions import RedisError

from shared import arq_compat, keyspace
from shared.queue import arq_deserialize

log = logging.getLogger("edge.worker")


@dataclass
class Claimed:
    job_id: str
    score: int
    data: bytes | None  # the job key's value; None when it is gone (expired, cancelled)
    job_try: int

    @classmethod
    def from_claim(cls, reply: list[Any]) -> list[Claimed]:
        """The claim script's flat reply: id, score, data, try, id, ..."""
        return [
            cls(reply[i].decode(), int(float(reply[i + 1])), reply[i + 2] or None, int(reply[i + 3]))
            for i in range(0, len(reply), 4)
        ]


async def run(worker: Worker, job: Claimed) -> None:
    """Run `job` as arq would, finishing it here unless its final publication did."""
    held: set[str] = worker.ctx["held"]
    finish = True
    try:
        finish = await _call(worker, job)
    finally:
        state = worker.ctx.get("edge")
        if state is not None:  # a request built ahead for a job that ended before its call
            state.built_ahead.pop(job.job_id, None)
        # A job whose final publication went out left `held` and had its keys deleted by it.
        if job.job_id in held:
            held.discard(job.job_id)
            await asyncio.shield(finish_job(worker, job.job_id, finish))


async def _call(worker: Worker, job: Claimed) -> bool:
    """Run the job's function; whether the job is finished (False: run it again elsewhere)."""
    if job.data is None:
        log.info("job %s expired before it ran", job.job_id)
        worker.jobs_failed += 1
        return True
    try:
        name, args, enqueue_time_ms = arq_compat.deserialize_job_data(job.data, arq_deserialize)
        function = worker.functions[name]
    except Exception:
        log.exception("job %s cannot be read; dropped", job.job_id)
        worker.jobs_failed += 1
        return True
    max_tries = worker.max_tries if function.max_tries is None else function.max_tries
    if job.job_try > max_tries:
        log.warning("job %s: max %d tries exceeded", job.job_id, max_tries)
        worker.jobs_failed += 1
        return True
    ctx = {
        **worker.ctx,
        "job_id": job.job_id,
        "job_try": job.job_try,
        "enqueue_time": ms_to_datetime(enqueue_time_ms),
        "score": job.score,
    }
    timeout_s = worker.job_timeout_s if function.timeout_s is None else function.timeout_s
    try:
        async with asyncio.timeout(timeout_s):  # in this task: wait_for would start another
            await function.coroutine(ctx, *args)
    except asyncio.CancelledError:
        # The worker is stopping: the job is run again by another worker (as arq does).
        worker.jobs_retried += 1
        return False
    except Exception:
        log.exception("job %s failed", job.job_id)
        worker.jobs_failed += 1
        return True
    worker.jobs_complete += 1
    return True


async def finish_job(worker: Worker, job_id: str, finished: bool) -> None:
    """arq's `finish_job` for a job kept without a result, and out of this worker's running set;
    a job to run again only loses its lease."""
    with contextlib.suppress(RedisError, OSError):
        async with worker.pool.pipeline(transaction=False) as pipe:
            if finished:
                arq_compat.finish_job(pipe, worker.queue_name, job_id)
            else:
                pipe.delete(arq_compat.IN_PROGRESS_KEY_PREFIX + job_id)
            pipe.srem(keyspace.running(worker.ctx["worker_id"]), job_id)
            await pipe.execute()
