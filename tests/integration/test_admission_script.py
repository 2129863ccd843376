"""The admission script (shared/admission.py) against a real redis-server: a virtual key's rpm
window and parallel slots, checked and charged in the one call that enqueues the job."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from edge_front.deployment_limits import FIELDS
from edge_workers.publishing import Publication, publish
from shared import keyspace
from shared.admission import KeyLimits
from shared.arq_compat import JOB_KEY_PREFIX
from shared.errors import EdgeError
from shared.miss_script import MissScript
from shared.queue import Job, Reply, cancel, slot_of
from shared.resp import LeanRedis
from shared.routing import BreakerSettings

KEY = "0123456789abcdef"


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
    admission = _Admission(r)
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
    admission = _Admission(r)
    window_s = 2
    if window_s - time.time() % window_s < 0.5:  # too near a boundary for two calls in one window
        await asyncio.sleep(window_s - time.time() % window_s)
    await admission.enqueue(job(1), limits(rpm=1, window_s=window_s))
    with pytest.raises(EdgeError):
        await admission.enqueue(job(2), limits(rpm=1, window_s=window_s))
    await asyncio.sleep(window_s - time.time() % window_s + 0.05)
    await admission.enqueue(job(3), limits(rpm=1, window_s=window_s))


async def test_parallel_slots_are_taken_released_and_expire_on_their_own(r: Redis) -> None:
    admission = _Admission(r)
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
    admission = _Admission(r)
    given = limits(rpm=1, parallel=1)
    first = await admission.enqueue(job(1), given)
    await r.zrem(keyspace.key_parallel(KEY), "job1")  # the worker answered the failed attempt
    retry = await admission.enqueue(job(2), given)  # no check, no charge: the same slot again
    assert retry.slot == first.slot == "job1"
    assert await r.get(keyspace.key_rpm(KEY, int(time.time() // 3600))) == b"1"
    assert await r.zrange(keyspace.key_parallel(KEY), 0, -1) == [b"job1"]
    job_key = await r.get(JOB_KEY_PREFIX + "job2")
    assert job_key is not None and b"job1" in job_key  # the stored job names its slot


# ---- tokens per minute and budgets: reservations, then the worker's booking -------------------


def reserving(
    tpm: int | None = None, budget: float | None = None, tokens: int = 0, usd: float = 0.0
) -> KeyLimits:
    given = KeyLimits(KEY, "team-a", None, None, 3600, tpm=tpm, budget=budget)
    given.reserve_tokens, given.reserve_usd = tokens, usd
    return given


async def test_tpm_counts_used_tokens_and_reservations_and_refuses_at_the_limit(r: Redis) -> None:
    admission = _Admission(r)
    window = int(time.time() // 3600)
    await r.set(keyspace.key_tpm(KEY, window), 600)  # booked by earlier answers
    first = reserving(tpm=1000, tokens=300)
    await admission.enqueue(job(1), first)
    headers = dict(first.headers)
    assert headers[b"x-ratelimit-limit-tokens"] == b"1000"
    assert headers[b"x-ratelimit-remaining-tokens"] == b"100"  # 600 used + 300 reserved
    assert await r.zrange(keyspace.key_parallel(KEY), 0, -1) == [b"job1:300:0.0"]  # the slot names it
    await admission.enqueue(job(2), reserving(tpm=1000, tokens=300))  # 900 < 1000: admitted
    with pytest.raises(EdgeError) as refused:  # 1200 >= 1000
        await admission.enqueue(job(3), reserving(tpm=1000, tokens=1))
    error = refused.value
    assert error.status == 429 and error.code == "rate_limit_exceeded"
    assert "tokens per minute" in error.message and "tpm_limit 1000" in error.message
    assert error.headers["x-ratelimit-remaining-tokens"] == "0" and int(error.headers["retry-after"]) > 0
    assert not await r.exists(JOB_KEY_PREFIX + "job3")
    # The answer of job 2 releases its reservation: room again.
    await cancel(r, "openai", ["job2"], [(KEY, "job2:300:0.0")])
    assert await r.zrange(keyspace.key_parallel(KEY), 0, -1) == [b"job1:300:0.0"]
    await admission.enqueue(job(4), reserving(tpm=1000, tokens=50))


async def test_a_budget_refuses_once_spend_and_reservations_reach_it(r: Redis) -> None:
    admission = _Admission(r)
    given = reserving(budget=1.0, usd=0.4)
    await r.hset(keyspace.key_spend(KEY, given.charge.period), "spend", "0.3")
    await admission.enqueue(job(1), given)  # 0.3 < 1: admitted, reserves 0.4
    await admission.enqueue(job(2), reserving(budget=1.0, usd=0.4))  # 0.7 < 1: admitted
    with pytest.raises(EdgeError) as refused:  # 1.1 >= 1
        await admission.enqueue(job(3), reserving(budget=1.0, usd=0.01))
    error = refused.value
    assert error.status == 429 and error.type_ == "insufficient_quota" and error.code == "budget_exceeded"
    assert error.headers["x-should-retry"] == "false"
    assert "team-a" in error.message and "max_budget $1" in error.message
    assert "does not reset" in error.message


async def test_an_expired_slot_takes_its_reservation_with_it(r: Redis) -> None:
    admission = _Admission(r)
    await admission.enqueue(job(1, deadline_s=-4.9), reserving(tpm=100, tokens=100))  # expires in 0.1 s
    with pytest.raises(EdgeError):
        await admission.enqueue(job(2), reserving(tpm=100, tokens=5))
    await asyncio.sleep(0.2)
    await admission.enqueue(job(3), reserving(tpm=100, tokens=5))
    assert await r.zrange(keyspace.key_parallel(KEY), 0, -1) == [b"job3:5:0.0"]


class _Admission:
    """The miss script as admission alone (no lookup, no flight): the job as enqueued."""

    def __init__(self, redis: Redis) -> None:
        self.script = MissScript(LeanRedis(redis))

    async def enqueue(self, job: Job, limits: KeyLimits) -> Job:
        enqueued = (await self.script.run(job, limits)).job
        assert enqueued is not None
        return enqueued


async def test_front_counts_requests_and_worker_counts_tokens_in_their_round_trips(r: Redis) -> None:
    job = Job("j1", "r1", "edge:reply:f", "openai", "m#0", "gpt-4o", b"{}", time.time() + 30)
    key = keyspace.usage("m#0", time.time())
    script = MissScript(LeanRedis(r))
    await script.run(job, usage_key=key)
    await script.run(job, usage_key=key)
    reply = Reply("j1", prompt_tokens=7, completion_tokens=5)
    await publish(LeanRedis(r), job, Publication([reply]), "w1", BreakerSettings(), key)
    assert await r.hmget(key, list(FIELDS)) == [b"2", b"12"]
    assert 0 < await r.ttl(key) <= 120
