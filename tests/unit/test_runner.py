"""edge_workers/runner.py runs a claimed job as arq's run_job would: the try limit, the timeout,
arq's counters, and the job's keys deleted unless its final publication already did; a job
cancelled by the worker's shutdown keeps its place in the queue for another worker."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
from arq.worker import func

from edge_workers import runner
from edge_workers.runner import Claimed
from shared import arq_compat, keyspace
from shared.queue import JOB_FUNCTION, arq_serialize

QUEUE = keyspace.queue("openai")


class FakeWorker:
    """What the runner reads and counts of arq's Worker."""

    def __init__(self, coroutine: Any, max_tries: int = 4, timeout_s: float = 5) -> None:
        self.pool = fakeredis.FakeAsyncRedis()
        self.ctx: dict[str, Any] = {"held": set(), "worker_id": "w1"}
        self.functions = {JOB_FUNCTION: func(coroutine, name=JOB_FUNCTION, max_tries=max_tries)}
        self.max_tries = 5
        self.job_timeout_s = timeout_s
        self.queue_name = QUEUE
        self.jobs_complete = self.jobs_failed = self.jobs_retried = 0


async def claimed(worker: FakeWorker, job_try: int = 1) -> Claimed:
    data = arq_compat.serialize_job_data(JOB_FUNCTION, (b"payload",), 1_000, arq_serialize)
    for key in (arq_compat.JOB_KEY_PREFIX + "j1", arq_compat.IN_PROGRESS_KEY_PREFIX + "j1"):
        await worker.pool.set(key, data)
    await worker.pool.zadd(QUEUE, {"j1": 1_000})
    await worker.pool.sadd(keyspace.running("w1"), "j1")
    worker.ctx["held"].add("j1")
    return Claimed("j1", 1_000, data, job_try)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_job_that_ran_without_publishing_is_finished_here() -> None:
    seen: list[dict[str, Any]] = []

    async def job(ctx: dict[str, Any], payload: bytes) -> None:
        seen.append({"try": ctx["job_try"], "payload": payload, "enqueued": ctx["enqueue_time"].timestamp()})

    async def main() -> None:
        worker = FakeWorker(job)
        await runner.run(worker, await claimed(worker, job_try=2))  # type: ignore[arg-type]
        assert seen == [{"try": 2, "payload": b"payload", "enqueued": 1.0}]
        assert worker.jobs_complete == 1
        assert await worker.pool.keys("*") == []  # job, lease, running set, queue entry: all gone

    run(main())


def test_a_job_its_final_publication_finished_costs_no_round_trip_here() -> None:
    async def publishes(ctx: dict[str, Any], payload: bytes) -> None:
        ctx["held"].discard(ctx["job_id"])  # what WorkerState.publish does after the last one

    async def main() -> None:
        worker = FakeWorker(publishes)
        await runner.run(worker, await claimed(worker))  # type: ignore[arg-type]
        # (the publication's own pipeline deletes the keys; here nothing touched them)
        assert await worker.pool.exists(arq_compat.JOB_KEY_PREFIX + "j1")

    run(main())


def test_a_job_over_its_tries_or_failing_or_gone_is_finished_and_counted_failed() -> None:
    async def fails(ctx: dict[str, Any], payload: bytes) -> None:
        raise RuntimeError("boom")

    async def main() -> None:
        for job_try, coroutine in ((5, fails), (1, fails)):
            worker = FakeWorker(coroutine)
            await runner.run(worker, await claimed(worker, job_try))  # type: ignore[arg-type]
            assert worker.jobs_failed == 1 and await worker.pool.keys("*") == []
        worker = FakeWorker(fails)
        job = await claimed(worker)
        job.data = None  # its key expired before it ran
        await runner.run(worker, job)  # type: ignore[arg-type]
        assert worker.jobs_failed == 1

    run(main())


def test_a_job_cancelled_by_shutdown_stays_queued_without_its_lease() -> None:
    started = asyncio.Event()

    async def slow(ctx: dict[str, Any], payload: bytes) -> None:
        started.set()
        await asyncio.sleep(60)

    async def main() -> None:
        worker = FakeWorker(slow)
        task = asyncio.create_task(runner.run(worker, await claimed(worker)))  # type: ignore[arg-type]
        await started.wait()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert worker.jobs_retried == 1
        assert await worker.pool.zscore(QUEUE, "j1") == 1_000  # another worker runs it again
        assert await worker.pool.exists(arq_compat.JOB_KEY_PREFIX + "j1")
        assert not await worker.pool.exists(arq_compat.IN_PROGRESS_KEY_PREFIX + "j1")
        assert not await worker.pool.sismember(keyspace.running("w1"), "j1")

    run(main())


def test_a_job_over_its_timeout_is_finished_as_failed() -> None:
    async def slow(ctx: dict[str, Any], payload: bytes) -> None:
        await asyncio.sleep(60)

    async def main() -> None:
        worker = FakeWorker(slow, timeout_s=0.05)
        await runner.run(worker, await claimed(worker))  # type: ignore[arg-type]
        assert worker.jobs_failed == 1 and await worker.pool.keys("*") == []

    run(main())
