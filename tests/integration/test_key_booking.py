"""The worker books a virtual key's real usage in the round trip that publishes the answer
(edge_workers/publishing.py), and drops what admission reserved for it. A real redis-server:
the publication runs the breaker's script too."""

from __future__ import annotations

import time

import msgspec
from redis.asyncio import Redis

from edge_workers.publishing import Attempt, Publication, publish
from shared import keyspace
from shared.admission import window_bounds
from shared.queue import Job, KeyCharge, Reply
from shared.resp import LeanRedis
from shared.routing import BreakerSettings

KEY = "0123456789abcdef"


def job(charge: KeyCharge | None, slot: str | None = "slot1") -> Job:
    return Job(
        job_id="job1",
        request_id="req1",
        reply_to="edge:reply:test",
        provider="openai",
        deployment_id="d",
        upstream_model="gpt-4o-mini",
        body=b"{}",
        deadline=time.time() + 30,
        key_id=KEY,
        slot=slot,
        charge=charge,
    )


def answer(
    status: int = 200, prompt: int = 0, completion: int = 0, cost: float = 0.0, kind: str = "final"
) -> Reply:
    return Reply(
        "job1", kind, status, b"{}", prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost
    )  # type: ignore[arg-type]


async def test_an_answer_books_spend_tokens_and_a_request_and_frees_the_reservation(r: Redis) -> None:
    ends = time.time() + 3600
    charge = KeyCharge("3600s7", ends, tpm_window_s=60)
    await r.zadd(keyspace.key_parallel(KEY), {"slot1": time.time() * 1000 + 30_000})
    final = Publication([answer(prompt=12, completion=30, cost=0.0042)], attempt=Attempt("ok"))
    await publish(LeanRedis(r), job(charge), final, "w1", BreakerSettings())
    spend = await r.hgetall(keyspace.key_spend(KEY, "3600s7"))
    assert float(spend[b"spend"]) == 0.0042
    assert (
        spend[b"prompt_tokens"] == b"12"
        and spend[b"completion_tokens"] == b"30"
        and spend[b"requests"] == b"1"
    )
    assert 0 < await r.ttl(keyspace.key_spend(KEY, "3600s7")) <= 3600 + 86400 + 1
    window, _ = window_bounds(time.time(), 60)
    assert await r.get(keyspace.key_tpm(KEY, window)) == b"42"
    assert not await r.exists(keyspace.key_parallel(KEY))  # the slot, and with it its reservation


async def test_a_failed_attempt_books_no_request_and_no_tpm_without_a_tpm_limit(r: Redis) -> None:
    charge = KeyCharge()  # no budget period, no tpm limit: the key's lifetime spend
    failed = Publication([answer(status=502)], attempt=Attempt("fail"))
    await publish(LeanRedis(r), job(charge, slot=None), failed, "w1", BreakerSettings())
    assert not await r.exists(keyspace.key_spend(KEY, "life"))
    streamed = Publication([answer(prompt=3, completion=4, cost=0.001, kind="done")], attempt=Attempt("ok"))
    await publish(LeanRedis(r), job(charge, slot=None), streamed, "w1", BreakerSettings())
    spend = await r.hgetall(keyspace.key_spend(KEY, "life"))
    assert spend[b"requests"] == b"1" and float(spend[b"spend"]) == 0.001
    assert await r.ttl(keyspace.key_spend(KEY, "life")) == -1  # a lifetime budget never resets
    assert await r.keys(keyspace.key_tpm(KEY, 0)[:-1] + "*") == []


async def test_the_master_key_books_nothing(r: Redis) -> None:
    master = Job("job1", "req1", "edge:reply:test", "openai", "d", "m", b"{}", time.time() + 30)
    final = Publication([answer(prompt=12, completion=30, cost=0.1)], attempt=Attempt("ok"))
    await publish(LeanRedis(r), master, final, "w1", BreakerSettings())
    assert await r.keys(keyspace.PREFIX + ":kspend*") == []


async def test_after_redis_lost_its_scripts_each_runs_once_and_nothing_twice(r: Redis) -> None:
    """A flight's fan-out, the booking and the breaker's record are called by hash: after a
    SCRIPT FLUSH (what a Redis restart does) they are loaded and run again alone, and the
    plain commands of the same pipeline are not repeated."""
    ends = time.time() + 3600
    flight = msgspec.structs.replace(job(KeyCharge("3600s7", ends)), cache_key="v1:ns:k", flight=True)
    await r.sadd(keyspace.flight_followers("v1:ns:k"), "edge:reply:other job9")
    await r.set(keyspace.flight("v1:ns:k"), "job1 0", px=30_000)
    await r.script_flush()
    final = Publication([answer(prompt=1, completion=2, cost=0.5)], attempt=Attempt("fail"))
    await publish(LeanRedis(r), flight, final, "w1", BreakerSettings())
    assert await r.xlen("edge:reply:test") == 1 and await r.xlen("edge:reply:other") == 1
    ((_, fields),) = await r.xrange("edge:reply:other")
    assert fields[b"w"] == b"job9"  # tagged with the follower's own wait id
    assert await r.get(keyspace.served("openai")) == b"1"  # the plain commands ran once
    spend = await r.hgetall(keyspace.key_spend(KEY, "3600s7"))
    assert float(spend[b"spend"]) == 0.5 and spend[b"requests"] == b"1"
    assert await r.exists(keyspace.breaker("d"))  # the breaker's record ran too
    assert not await r.exists(keyspace.flight("v1:ns:k"))  # the last publication ended the flight
