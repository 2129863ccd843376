"""The admission script (shared/admission.py) against a real redis-server: a virtual key's rpm
window and parallel slots, checked and charged in the one call that enqueues the job."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from edge_agent.redis_server import RedisServer
from shared import keyspace
from shared.admission import Admission, KeyLimits
from shared.arq_compat import JOB_KEY_PREFIX
from shared.errors import EdgeError
from shared.queue import Job, cancel, slot_of

KEY = "0123456789abcdef"


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def job(n: int, deadline_s: float = 30.0) -> Job:
    return Job(
        job_id=f"job{n}",
        request_id=f"req{n}",
        reply_to="edge:reply:test",
        provider="openai",
        deployment_id="d",
        upstream_model="m",
        body=b"{}",
        deadline=time.time() + deadline_s,
        key_id=KEY,
    )


def limits(rpm: int | None = None, parallel: int | None = None, window_s: int = 3600) -> KeyLimits:
    return KeyLimits(KEY, "team-a", rpm, parallel, window_s)


async def test_rpm_admits_exactly_the_limit_then_refuses_without_enqueueing(r: Redis) -> None:
    admission = Admission(r)
    for n in range(3):
        given = limits(rpm=3)
        await admission.enqueue(job(n), given)
        assert dict(given.headers)[b"x-ratelimit-remaining-requests"] == str(2 - n).encode()
    with pytest.raises(EdgeError) as refused:
        await admission.enqueue(job(9), limits(rpm=3))
    error = refused.value
    assert error.status == 429 and "requests per minute" in error.message and "team-a" in error.message
    assert error.headers["x-ratelimit-remaining-requests"] == "0"
    assert 0 < int(error.headers["retry-after"]) <= 3600
    assert await r.zcard(keyspace.queue("openai")) == 3  # the refused job was not enqueued
    assert not await r.exists(JOB_KEY_PREFIX + "job9")
    assert await r.xlen(keyspace.wake("openai")) == 3


async def test_a_new_window_admits_again(r: Redis) -> None:
    admission = Admission(r)
    window_s = 2
    if window_s - time.time() % window_s < 0.5:  # too near a boundary for two calls in one window
        await asyncio.sleep(window_s - time.time() % window_s)
    await admission.enqueue(job(1), limits(rpm=1, window_s=window_s))
    with pytest.raises(EdgeError):
        await admission.enqueue(job(2), limits(rpm=1, window_s=window_s))
    await asyncio.sleep(window_s - time.time() % window_s + 0.05)
    await admission.enqueue(job(3), limits(rpm=1, window_s=window_s))


async def test_parallel_slots_are_taken_released_and_expire_on_their_own(r: Redis) -> None:
    admission = Admission(r)
    first = await admission.enqueue(job(1), limits(parallel=2))
    second = await admission.enqueue(job(2, deadline_s=-4.9), limits(parallel=2))  # expires in 0.1 s
    assert first.slot == "job1" and second.slot == "job2"
    with pytest.raises(EdgeError) as refused:
        await admission.enqueue(job(3), limits(parallel=2))
    assert "parallel requests" in refused.value.message and refused.value.headers["retry-after"] == "1"
    await asyncio.sleep(0.2)  # job2's slot (deadline + grace) has passed: pruned by the next check
    await admission.enqueue(job(4), limits(parallel=2))
    assert set(await r.zrange(keyspace.key_parallel(KEY), 0, -1)) == {b"job1", b"job4"}
    await cancel(r, "openai", [first.job_id], slot_of(first))  # the front's cancel frees it
    assert set(await r.zrange(keyspace.key_parallel(KEY), 0, -1)) == {b"job4"}


async def test_a_retry_is_not_charged_again_and_keeps_the_request_slot(r: Redis) -> None:
    admission = Admission(r)
    given = limits(rpm=1, parallel=1)
    first = await admission.enqueue(job(1), given)
    await r.zrem(keyspace.key_parallel(KEY), "job1")  # the worker answered the failed attempt
    retry = await admission.enqueue(job(2), given)  # no check, no charge: the same slot again
    assert retry.slot == first.slot == "job1"
    assert await r.get(keyspace.key_rpm(KEY, int(time.time() // 3600))) == b"1"
    assert await r.zrange(keyspace.key_parallel(KEY), 0, -1) == [b"job1"]
    job_key = await r.get(JOB_KEY_PREFIX + "job2")
    assert job_key is not None and b"job1" in job_key  # the stored job names its slot
