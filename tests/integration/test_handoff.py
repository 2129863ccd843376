"""Hand-off (edge_workers/handoff.py): the miss script publishes a job to the idle worker whose
fresh ticket it takes and claims it for that worker as the claim script would, or wakes any
worker through the wake stream when no fresh ticket's worker listens (a real redis-server); and
real workers, fronts and the official SDK: idle, killed, draining, Redis restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import openai
import pytest
import redis
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_workers.handoff import handed_job
from edge_workers.runner import Claimed
from shared import keyspace
from shared.arq_compat import (
    CLAIM_LUA,
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    RETRY_KEY_PREFIX,
    RETRY_KEY_TTL_S,
    WORKER_STATE_TTL_S,
)
from shared.miss_script import MissScript
from shared.queue import TICKET_FRESH_MS, Job
from shared.resp import LeanRedis
from tests.integration.conftest import sample, scrape, wait_until

IDLE = keyspace.idle("openai")


def job(n: int) -> Job:
    return Job(f"job{n}", f"req{n}", "edge:reply:f", "openai", "m#0", "gpt-4o", b"{}", time.time() + 30)


async def enqueue(r: Redis, n: int) -> Job:
    enqueued = (await MissScript(LeanRedis(r)).run(job(n))).job
    assert enqueued is not None
    return enqueued


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture
async def inboxes(r: Redis) -> AsyncIterator[PubSub]:
    """Listening as workers w1 and w2 would."""
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    channels = (keyspace.inbox("w1"), keyspace.inbox("w2"))
    await pubsub.subscribe(*channels)
    for _ in range(500):  # until Redis has both subscriptions
        if [n for _, n in await r.pubsub_numsub(*channels)] == [1, 1]:
            break
        await asyncio.sleep(0.01)
    try:
        yield pubsub
    finally:
        await pubsub.aclose()


async def handed(pubsub: PubSub) -> dict[str, list[Claimed]]:
    """Worker id -> the jobs handed to it so far."""
    got: dict[str, list[Claimed]] = {}
    # Published before this is called; get_message also returns None for a subscription's reply.
    for _ in range(20):
        message = await pubsub.get_message(timeout=0.05)
        if message is None:
            continue
        worker = message["channel"].decode().removeprefix(keyspace.inbox(""))
        got.setdefault(worker, []).append(handed_job(message["data"]))
    return got


async def woken(r: Redis) -> list[bytes]:
    return [fields[b"j"] for _, fields in await r.xrange(keyspace.wake("openai"))]


async def test_a_fresh_ticket_takes_the_job_claimed_for_its_worker(r: Redis, inboxes: PubSub) -> None:
    await r.zadd(IDLE, {"w1": now_ms()})
    await enqueue(r, 1)

    [claimed] = (await handed(inboxes))["w1"]
    assert (claimed.job_id, claimed.job_try) == ("job1", 1)
    assert claimed.data == await r.get(JOB_KEY_PREFIX + "job1")  # arq's job data, as a claim returns it
    assert claimed.score == await r.zscore(keyspace.queue("openai"), "job1")  # still queued, as arq keeps it
    # What the claim script would have written: the lease, the running set, the try.
    assert await r.pttl(IN_PROGRESS_KEY_PREFIX + "job1") > 30_000
    assert await r.smembers(keyspace.running("w1")) == {b"job1"}
    assert 0 < await r.ttl(keyspace.running("w1")) <= WORKER_STATE_TTL_S
    assert await r.get(RETRY_KEY_PREFIX + "job1") == b"1"
    assert 0 < await r.ttl(RETRY_KEY_PREFIX + "job1") <= RETRY_KEY_TTL_S
    # The ticket is spent, and no other worker is woken for the job.
    assert await r.zcard(IDLE) == 0
    assert await woken(r) == []


async def test_a_handed_job_is_not_claimed_again_by_the_poll(r: Redis, inboxes: PubSub) -> None:
    await r.zadd(IDLE, {"w1": now_ms()})
    await enqueue(r, 1)
    claim = r.register_script(CLAIM_LUA)
    keys = keyspace.claim_keys("openai", "w2")
    assert await claim(keys=keys, args=[now_ms() + 1000, 60_000, WORKER_STATE_TTL_S, 10, 1, "", "job1"]) == []


async def test_a_claim_into_the_kept_slot_takes_the_ticket_back_or_leaves_the_slot(r: Redis) -> None:
    """A worker with its ticket out claims into the slot it kept only by taking the ticket back in
    the claim; when a miss took the ticket first, the handed job gets the slot."""
    claim = r.register_script(CLAIM_LUA)
    keys = keyspace.claim_keys("openai", "w1")
    for n in (1, 2, 3, 4):
        await r.zadd(keyspace.queue("openai"), {f"j{n}": 1_000})
    await r.zadd(IDLE, {"w1": now_ms()})
    args = [2_000, 60_000, WORKER_STATE_TTL_S, 2, 2, "w1", "j1", "j2"]
    assert [job_id for job_id, *_ in chunks(await claim(keys=keys, args=args))] == [b"j1", b"j2"]
    assert await r.zcard(IDLE) == 0  # taken back: no job will be handed to this worker
    args = [2_000, 60_000, WORKER_STATE_TTL_S, 2, 2, "w1", "j3", "j4"]  # the ticket was taken meanwhile
    assert [job_id for job_id, *_ in chunks(await claim(keys=keys, args=args))] == [b"j3"]


def chunks(reply: list[bytes]) -> list[list[bytes]]:
    return [reply[i : i + 4] for i in range(0, len(reply), 4)]


async def test_without_a_fresh_ticket_the_job_wakes_any_worker(r: Redis, inboxes: PubSub) -> None:
    await enqueue(r, 1)  # no ticket at all
    stale = now_ms() - TICKET_FRESH_MS - 1000
    await r.zadd(IDLE, {"w1": stale, "w2": stale - 1000})
    await enqueue(r, 2)

    assert await woken(r) == [b"job1", b"job2"]
    assert await handed(inboxes) == {}
    assert await r.zcard(IDLE) == 0  # the freshest was stale: every other one too
    assert await r.exists(keyspace.running("w1"), IN_PROGRESS_KEY_PREFIX + "job2") == 0


async def test_a_ticket_nobody_listens_to_costs_nothing(r: Redis, inboxes: PubSub) -> None:
    """Its worker is gone (its subscription went with its connection): the next ticket, or the
    wake stream; nothing claimed for the gone worker."""
    await r.zadd(IDLE, {"gone": now_ms(), "w1": now_ms() - 500})
    await enqueue(r, 1)
    await r.zadd(IDLE, {"gone": now_ms()})
    await enqueue(r, 2)

    assert {w: [c.job_id for c in jobs] for w, jobs in (await handed(inboxes)).items()} == {"w1": ["job1"]}
    assert await woken(r) == [b"job2"]
    assert (
        await r.exists(keyspace.running("gone"), RETRY_KEY_PREFIX + "job2", IN_PROGRESS_KEY_PREFIX + "job2")
        == 0
    )
    assert await r.zcard(IDLE) == 0


async def test_one_job_per_ticket_freshest_first(r: Redis, inboxes: PubSub) -> None:
    at = now_ms()
    await r.zadd(IDLE, {"w1": at - 500, "w2": at})
    for n in (1, 2, 3):
        await enqueue(r, n)

    assert {w: [c.job_id for c in jobs] for w, jobs in (await handed(inboxes)).items()} == {
        "w2": ["job1"],
        "w1": ["job2"],
    }
    assert await woken(r) == [b"job3"]


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


def two_idle_workers(stack: DevStack) -> tuple[Worker, Worker, Front, redis.Redis]:
    """Two workers with their tickets out, a front, and a client of their Redis."""
    one, other = stack.start_worker("openai"), stack.start_worker("openai")
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, one) and ticket_of(r, other), "both workers' tickets")
    return one, other, front, r


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


def test_a_worker_killed_while_idle_takes_no_job(stack: DevStack) -> None:
    """The freshest ticket is a worker SIGKILLed while idle: its subscription went with it, so the
    miss claims nothing for it (no reaper needed) and wakes the other worker at once."""
    doomed, survivor, front, r = two_idle_workers(stack)
    doomed.process.kill()
    doomed.process.wait()
    # As if it renewed its ticket just before it died: the miss takes its ticket first.
    member = next(m for m in r.zrange(IDLE, 0, -1) if f"-{doomed.pid}-" in m.decode())
    r.zadd(IDLE, {member: int(time.time() * 1000) + 1000})
    text = f"orphaned {uuid.uuid4()}"
    assert (ask(front, text) or "").startswith(f"Re: {text}")
    answered = sample(
        scrape(survivor.metrics_url), "llm_edge_worker_jobs_total", provider="openai", status="200"
    )
    assert answered == 1
    assert not r.exists(keyspace.running(member.decode()))  # nothing was claimed for the dead one


def test_hand_off_resumes_after_redis_restarts(stack: DevStack) -> None:
    """The inbox subscribes again when its connection comes back, and tickets go out again."""
    worker = stack.start_worker("openai")
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, worker), "the worker's ticket")
    stack.redis.crash()
    stack.redis.restart()  # empty: no ticket, no subscription
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: ticket_of(r, worker), "the worker's ticket after the restart", timeout_s=30)
    before = sample(scrape(worker.metrics_url), "llm_edge_worker_handed_total", provider="openai")
    text = f"after restart {uuid.uuid4()}"
    assert (ask(front, text) or "").startswith(f"Re: {text}")
    assert sample(scrape(worker.metrics_url), "llm_edge_worker_handed_total", provider="openai") == before + 1


def test_a_draining_worker_withdraws_its_ticket(stack: DevStack) -> None:
    leaving, staying, front, r = two_idle_workers(stack)
    os.kill(leaving.pid, signal.SIGTERM)
    wait_until(lambda: ticket_of(r, leaving) is None, "the draining worker's ticket withdrawn")
    for n in range(3):
        text = f"after drain {n} {uuid.uuid4()}"
        assert (ask(front, text) or "").startswith(f"Re: {text}")
    jobs = sample(scrape(staying.metrics_url), "llm_edge_worker_jobs_total", provider="openai", status="200")
    assert jobs == 3  # none handed to the leaving worker
    leaving.process.wait(timeout=30)
