"""The ledger (edge_workers/ledger.py) against a real redis-server: a successful attempt's
records (breaker, served counter, outcome line) leave with a later batch, not with the answer;
a failure, or an attempt the front may have sent as a half-open breaker's probe, writes them with
the answer, after what waited, so the outcomes stream keeps the answers' order."""

from __future__ import annotations

import asyncio
import time

import msgspec
from redis.asyncio import Redis

from edge_workers import ledger as ledger_module
from edge_workers.ledger import Ledger
from edge_workers.publishing import Attempt, Publication, load_scripts, publish
from shared import keyspace, outcomes
from shared.queue import Job, Reply
from shared.resp import LeanRedis
from shared.routing import BreakerSettings


def job(n: int, record_now: bool = False) -> Job:
    return Job(
        f"job{n}",
        f"req{n}",
        "edge:reply:f",
        "openai",
        "m#0",
        "gpt-4o",
        b"{}",
        time.time() + 30,
        record_now=record_now,
    )


def answer(n: int, status: int = 200, outcome: str = "ok") -> Publication:
    return Publication([Reply(f"job{n}", status=status, body=b"{}")], attempt=Attempt(outcome, 10.0 + n))  # type: ignore[arg-type]


async def lines(r: Redis) -> list[str]:
    parsed = [outcomes.parse(fields) for _, fields in await r.xrange(keyspace.outcomes("openai"))]
    return [f"{e.request_id} {e.status}" for e in parsed if e is not None]


async def test_a_success_s_records_wait_for_the_batch(r: Redis) -> None:
    await load_scripts(r)
    lean = LeanRedis(r)
    ledger = Ledger(lean)
    for n in (1, 2):
        await publish(lean, job(n), answer(n), "w1", BreakerSettings(), ledger=ledger)
    assert await r.xlen("edge:reply:f") == 2  # the answers went out
    assert await lines(r) == [] and await r.get(keyspace.served("openai")) is None
    assert len(ledger) == 2
    await ledger.flush()
    assert await lines(r) == ["req1 200", "req2 200"]
    assert await r.get(keyspace.served("openai")) == b"2"
    assert await r.hget(keyspace.breaker("m#0"), "ewma_ms") is not None
    await lean.aclose()


async def test_the_batch_leaves_on_its_own(r: Redis) -> None:
    await load_scripts(r)
    lean = LeanRedis(r)
    ledger = Ledger(lean)
    await publish(lean, job(1), answer(1), "w1", BreakerSettings(), ledger=ledger)
    for _ in range(100):  # LEDGER_FLUSH_S, with room for a slow machine
        if await lines(r):
            break
        await asyncio.sleep(ledger_module.LEDGER_FLUSH_S)
    assert await lines(r) == ["req1 200"]
    await lean.aclose()


async def test_a_failure_or_a_possible_probe_writes_now_after_what_waited(r: Redis) -> None:
    await load_scripts(r)
    lean = LeanRedis(r)
    ledger = Ledger(lean)
    await publish(lean, job(1), answer(1), "w1", BreakerSettings(), ledger=ledger)
    await publish(lean, job(2), answer(2, 500, "fail"), "w1", BreakerSettings(), ledger=ledger)
    assert await lines(r) == ["req1 200", "req2 500"] and len(ledger) == 0
    await publish(lean, job(3, record_now=True), answer(3), "w1", BreakerSettings(), ledger=ledger)
    assert await lines(r) == ["req1 200", "req2 500", "req3 200"] and len(ledger) == 0
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(job(3, record_now=True)), type=Job).record_now
    await lean.aclose()
