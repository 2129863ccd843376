"""Hand-off (edge_workers/handoff.py) against a real redis-server: the miss script gives a job to
the idle worker whose fresh ticket it takes, claimed for it as the claim script would, and falls
back to the wake stream when no fresh ticket is there; the worker reads its inbox as claims."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis
from redis.asyncio import Redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_workers.handoff import Ticket
from edge_workers.runner import Claimed
from shared import keyspace
from shared.arq_compat import (
    CLAIM_LUA,
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    RETRY_KEY_PREFIX,
    WORKER_STATE_TTL_S,
)
from shared.miss_script import MissScript
from shared.queue import TICKET_FRESH_MS, Job
from shared.resp import LeanRedis, streams_entries
from tests.integration.conftest import sample, scrape, wait_until

IDLE = keyspace.idle("openai")


def job(n: int) -> Job:
    return Job(f"job{n}", f"req{n}", "edge:reply:f", "openai", "m#0", "gpt-4o", b"{}", time.time() + 30)


async def enqueue(r: Redis, n: int) -> Job:
    enqueued = (await MissScript(LeanRedis(r)).run(job(n))).job
    assert enqueued is not None
    return enqueued


async def inbox(r: Redis, worker: str) -> list[Claimed]:
    raw = await LeanRedis(r).execute("XREAD", "STREAMS", keyspace.inbox(worker), "0-0")
    return Ticket("openai", worker).handed(streams_entries(raw).get(keyspace.inbox(worker).encode(), []))


def now_ms() -> int:
    return int(time.time() * 1000)


async def test_a_fresh_ticket_takes_the_job_claimed_for_its_worker(r: Redis) -> None:
    await r.zadd(IDLE, {"w1": now_ms()})
    await enqueue(r, 1)

    [claimed] = await inbox(r, "w1")
    assert (claimed.job_id, claimed.job_try) == ("job1", 1)
    assert claimed.data == await r.get(JOB_KEY_PREFIX + "job1")  # arq's job data, as a claim returns it
    assert claimed.score == await r.zscore(keyspace.queue("openai"), "job1")  # still queued, as arq keeps it
    # What the claim script would have written: the lease, the running set, the try.
    assert await r.pttl(IN_PROGRESS_KEY_PREFIX + "job1") > 30_000
    assert await r.smembers(keyspace.running("w1")) == {b"job1"}
    assert 0 < await r.ttl(keyspace.running("w1")) <= WORKER_STATE_TTL_S
    assert await r.get(RETRY_KEY_PREFIX + "job1") == b"1"
    assert 0 < await r.ttl(keyspace.inbox("w1")) <= WORKER_STATE_TTL_S
    # The ticket is spent, and no other worker is woken for the job.
    assert await r.zcard(IDLE) == 0
    assert await r.xlen(keyspace.wake("openai")) == 0


async def test_a_handed_job_is_not_claimed_again_by_the_poll(r: Redis) -> None:
    await r.zadd(IDLE, {"w1": now_ms()})
    await enqueue(r, 1)
    claim = r.register_script(CLAIM_LUA)
    keys = [
        keyspace.queue("openai"),
        IN_PROGRESS_KEY_PREFIX,
        keyspace.running("w2"),
        keyspace.wake("openai"),
        JOB_KEY_PREFIX,
        RETRY_KEY_PREFIX,
    ]
    assert await claim(keys=keys, args=[now_ms() + 1000, 60_000, WORKER_STATE_TTL_S, 10, 1, "job1"]) == []


async def test_without_a_fresh_ticket_the_job_wakes_any_worker(r: Redis) -> None:
    await enqueue(r, 1)  # no ticket at all
    stale = now_ms() - TICKET_FRESH_MS - 1000
    await r.zadd(IDLE, {"dead": stale, "deader": stale - 1000})
    await enqueue(r, 2)

    woke = [fields[b"j"] for _, fields in await r.xrange(keyspace.wake("openai"))]
    assert woke == [b"job1", b"job2"]
    assert await r.zcard(IDLE) == 0  # the freshest was stale: every other one too
    assert (
        await r.exists(keyspace.inbox("dead"), keyspace.running("dead"), IN_PROGRESS_KEY_PREFIX + "job2") == 0
    )


async def test_one_job_per_ticket_freshest_first(r: Redis) -> None:
    at = now_ms()
    await r.zadd(IDLE, {"older": at - 500, "newer": at})
    for n in (1, 2, 3):
        await enqueue(r, n)

    assert [c.job_id for c in await inbox(r, "newer")] == ["job1"]
    assert [c.job_id for c in await inbox(r, "older")] == ["job2"]
    assert [fields[b"j"] for _, fields in await r.xrange(keyspace.wake("openai"))] == [b"job3"]


async def test_the_worker_reads_its_inbox_after_what_it_read(r: Redis) -> None:
    ticket = Ticket("openai", "w1")
    assert ticket.due()
    await r.execute_command(*ticket.renew())
    assert ticket.out and not ticket.due()
    await enqueue(r, 1)
    read = ("XREAD", "STREAMS", ticket.inbox, ticket.last_id)
    assert [
        c.job_id
        for c in ticket.handed(streams_entries(await LeanRedis(r).execute(*read))[ticket.inbox.encode()])
    ] == ["job1"]
    assert not ticket.out and ticket.due()  # spent: due to go out again
    read = ("XREAD", "STREAMS", ticket.inbox, ticket.last_id)
    assert await LeanRedis(r).execute(*read) is None  # nothing read twice

    await r.execute_command(*ticket.withdraw())
    assert await r.zscore(IDLE, "w1") is None
    assert not ticket.due()  # a draining worker puts none out again


# ---- real processes ---------------------------------------------------------------------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    dev = DevStack(log_dir=tmp_path)
    try:
        dev.start_redis()
        dev.start_upstream()
        yield dev
    finally:
        dev.stop()


def ask(front: Front, text: str) -> str | None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content


def ticket_of(r: redis.Redis, worker: Worker) -> float | None:
    """The worker's ticket's renewal time (ms), None when it has none out."""
    for member, score in r.zrange(IDLE, 0, -1, withscores=True):
        if f"-{worker.pid}-" in member.decode():
            return float(score)
    return None


def test_an_idle_worker_is_handed_each_miss(stack: DevStack) -> None:
    """One request at a time: every miss goes to the idle worker's inbox, none through a claim;
    its answer puts the ticket out again for the next."""
    worker = stack.start_worker("openai")
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, worker), "the worker's ticket")
    for n in range(5):
        text = f"handed {n} {uuid.uuid4()}"
        assert (ask(front, text) or "").startswith(f"Re: {text}")
    assert sample(scrape(worker.metrics_url), "llm_edge_worker_handed_total", provider="openai") == 5
    assert r.xlen(keyspace.wake("openai")) == 0  # nobody was woken to claim
    assert r.zcard(keyspace.queue("openai")) == 0  # each job's keys went with its answer
    assert ticket_of(r, worker) is not None


def test_a_worker_killed_while_idle_loses_no_job(stack: DevStack) -> None:
    """The freshest ticket is a worker SIGKILLed while idle: the job handed to it is put back on
    the queue by the reaper and answered by the other worker, seconds later."""
    doomed = stack.start_worker("openai")
    survivor = stack.start_worker("openai")
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, doomed) and ticket_of(r, survivor), "both workers' tickets")
    doomed.process.kill()
    doomed.process.wait()
    # As if it renewed its ticket just before it died: the miss takes its ticket, not the survivor's.
    member = next(m for m in r.zrange(IDLE, 0, -1) if f"-{doomed.pid}-" in m.decode())
    r.zadd(IDLE, {member: int(time.time() * 1000) + 1000})
    started = time.monotonic()
    text = f"orphaned {uuid.uuid4()}"
    assert (ask(front, text) or "").startswith(f"Re: {text}")
    assert time.monotonic() - started < 10  # the reaper's seconds, not the request's deadline
    assert (
        sample(scrape(survivor.metrics_url), "llm_edge_worker_jobs_total", provider="openai", status="200")
        == 1
    )
    assert not r.exists(keyspace.inbox(member.decode()))


def test_a_draining_worker_withdraws_its_ticket(stack: DevStack) -> None:
    leaving = stack.start_worker("openai")
    staying = stack.start_worker("openai")
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, leaving) and ticket_of(r, staying), "both workers' tickets")
    os.kill(leaving.pid, signal.SIGTERM)
    wait_until(lambda: ticket_of(r, leaving) is None, "the draining worker's ticket withdrawn")
    for n in range(3):  # straight to the other worker, none waits for a reaper
        started = time.monotonic()
        text = f"after drain {n} {uuid.uuid4()}"
        assert (ask(front, text) or "").startswith(f"Re: {text}")
        assert time.monotonic() - started < 1.5
    leaving.process.wait(timeout=30)
