"""Every job outcome reaches the waiting front, exceptions included: the worker's job function
run against a real redis-server, with faults injected where production code would fail."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ConnectionError as RedisConnectionError

from edge_agent.redis_server import RedisServer
from edge_workers import jobs
from edge_workers.jobs import MAX_RUNS, WorkerState, chat_completion
from edge_workers.publishing import Attempt, Publication, publish
from shared import keyspace, outcomes
from shared.config import load_settings
from shared.errors import error_body
from shared.queue import Job, Reply, decode_reply, encode_job
from shared.resp import LeanRedis
from shared.routing import BreakerSettings


def run_job(server: RedisServer, job_try: int = 1) -> tuple[list[Reply], set[bytes]]:
    """Run one job through `chat_completion`; the replies its front would read, and what is left
    in the worker's running set."""

    async def main() -> tuple[list[Reply], set[bytes]]:
        redis = Redis.from_url(server.url)
        settings, models = load_settings({"EDGE_MASTER_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
        deployment = models.group("gpt-4o-mini")[0]
        session = aiohttp.ClientSession()
        state = WorkerState(
            provider="openai",
            worker_id="w-test",
            settings=settings,
            models=models,
            api_keys={},
            session=session,
            redis=redis,
            lean=LeanRedis(redis),
        )
        job = Job(
            job_id=f"job-{time.monotonic_ns()}",
            request_id="req-test",
            reply_to=f"edge:reply:test-{time.monotonic_ns()}",
            provider="openai",
            deployment_id=deployment.id,
            upstream_model="gpt-4o-mini",
            body=msgspec.json.encode(
                {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
            ),
            deadline=time.time() + 30,
        )
        await redis.sadd(keyspace.running("w-test"), job.job_id)
        state.held.add(job.job_id)
        ctx: dict[str, Any] = {"edge": state, "job_try": job_try, "enqueue_time": datetime.now(UTC)}
        try:
            await chat_completion(ctx, encode_job(job))
            entries = await redis.xrange(job.reply_to)
            running = await redis.smembers(keyspace.running("w-test"))
        finally:
            await session.close()
            await state.lean.aclose()
            await redis.aclose()
        return [decode_reply(fields[b"r"]) for _, fields in entries], running

    return asyncio.run(main())


def test_an_unexpected_exception_in_a_job_is_answered_with_a_502(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(jobs, "call_upstream", broken)
    replies, running = run_job(server)
    assert [(r.kind, r.status) for r in replies] == [("final", 502)]
    assert b"worker failed" in replies[0].body and b"a bug" not in replies[0].body
    assert running == set()  # and the job left the worker's running set


def test_a_redis_error_while_publishing_the_answer_is_retried_and_the_answer_arrives(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def answered(*args: object, **kwargs: object) -> jobs.Outcome:
        return jobs.Outcome(200, b'{"id": "x"}', attempted=True)

    real_publish = jobs.publish
    calls = 0

    async def flaky_publish(*args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:  # the answer's publication: Redis blinks
            raise RedisConnectionError("connection reset")
        await real_publish(*args, **kwargs)

    monkeypatch.setattr(jobs, "call_upstream", answered)
    monkeypatch.setattr(jobs, "publish", flaky_publish)
    replies, running = run_job(server)
    assert [(r.kind, r.status, r.body) for r in replies] == [("final", 200, b'{"id": "x"}')]
    assert calls == 2  # the same answer, published again
    assert running == set()


def test_a_job_that_killed_its_workers_too_often_is_answered_not_dropped(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a job past its runs must not reach the upstream")

    monkeypatch.setattr(jobs, "call_upstream", never)
    replies, running = run_job(server, job_try=MAX_RUNS + 1)
    assert [(r.kind, r.status) for r in replies] == [("final", 502)]
    assert b"abandoned" in replies[0].body
    assert running == set()


def test_each_job_s_outcome_is_recorded_redacted_in_the_answer_s_round_trip(
    server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard's source: one capped-stream entry per job, written by the pipeline that
    publishes the answer; an error's message redacted and cut, never the body as a whole."""
    message = "bad request from ann@example.com " + "x" * 1000
    answers = iter(
        [
            jobs.Outcome(200, b'{"id": "x"}', attempted=True, latency_ms=12.5),
            jobs.Outcome(400, error_body(400, message), attempted=True, latency_ms=3.0),
        ]
    )

    async def upstream(*args: object, **kwargs: object) -> jobs.Outcome:
        return next(answers)

    monkeypatch.setattr(jobs, "call_upstream", upstream)
    sync = redis.Redis.from_url(server.url)
    sync.delete(keyspace.outcomes("openai"))
    executed: list[str] = []
    real_execute, real_batch = Pipeline.execute, LeanRedis.execute_many

    async def counting(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        executed.append("redis-py pipeline")
        return await real_execute(self, *args, **kwargs)

    async def counting_batch(self: LeanRedis, *args: Any, **kwargs: Any) -> Any:
        executed.append("lean batch")
        return await real_batch(self, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "execute", counting)
    monkeypatch.setattr(LeanRedis, "execute_many", counting_batch)
    run_job(server)
    # The outcome went with the answer: no round trip of its own.
    assert executed == ["lean batch"]
    run_job(server)
    entries = [outcomes.parse(fields) for _, fields in sync.xrange(keyspace.outcomes("openai"))]
    assert [(e.status, e.latency_ms, e.request_id, e.model) for e in entries if e] == [
        (200, 12.5, "req-test", "gpt-4o-mini"),
        (400, 3.0, "req-test", "gpt-4o-mini"),
    ]
    ok, failed = entries
    assert ok is not None and failed is not None
    assert ok.message == "" and ok.deployment == failed.deployment == "openai:gpt-4o-mini"
    assert failed.message.startswith("bad request from [REDACTED:email] xxx")
    assert len(failed.message) == outcomes.MAX_MESSAGE_CHARS + 3
    assert time.time() * 1000 - failed.time_ms < 30_000


def test_the_outcome_stream_stays_capped(server: RedisServer) -> None:
    async def main() -> int:
        redis_ = Redis.from_url(server.url)
        job = Job(
            "j", "req", "edge:reply:cap-test", "openai", "openai:gpt-4o-mini", "gpt-4o-mini", b"{}", 0.0
        )
        pub = Publication([Reply("j", status=200, body=b"{}")], attempt=Attempt("ok", 5.0))
        lean = LeanRedis(redis_)
        try:
            await redis_.delete(keyspace.outcomes("openai"))
            for _ in range(outcomes.OUTCOMES_MAXLEN + 500):
                await publish(lean, job, pub, "w-cap", BreakerSettings())
            length: int = await redis_.xlen(keyspace.outcomes("openai"))
            return length
        finally:
            await lean.aclose()
            await redis_.aclose()

    length = asyncio.run(main())
    # Approximate trimming keeps at most one radix-tree node (100 entries) over the cap.
    assert outcomes.OUTCOMES_MAXLEN <= length <= outcomes.OUTCOMES_MAXLEN + 100
