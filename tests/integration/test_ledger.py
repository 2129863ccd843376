"""The ledger (edge_workers/ledger.py) against a real redis-server: a successful attempt's
records (breaker, served counter, outcome line) leave with a later batch, not with the answer;
a failure, or an attempt the front may have sent as a half-open breaker's probe, writes them with
the answer, after what waited, so the outcomes stream keeps the answers' order."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
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


@pytest.fixture
async def lean(r: Redis) -> AsyncIterator[LeanRedis]:
    """A worker's publication connection, its scripts loaded."""
    await load_scripts(r)
    connection = LeanRedis(r)
    try:
        yield connection
    finally:
        await connection.aclose()


async def send(lean: LeanRedis, ledger: Ledger, n: int, status: int = 200, record_now: bool = False) -> None:
    pub = answer(n, status, "ok" if status == 200 else "fail")
    await publish(lean, job(n, record_now), pub, "w1", BreakerSettings(), ledger=ledger)


async def lines(r: Redis) -> list[str]:
    parsed = [outcomes.parse(fields) for _, fields in await r.xrange(keyspace.outcomes("openai"))]
    return [f"{e.request_id} {e.status}" for e in parsed if e is not None]


async def test_a_success_s_records_wait_for_the_batch(r: Redis, lean: LeanRedis) -> None:
    ledger = Ledger(lean)
    for n in (1, 2):
        await send(lean, ledger, n)
    assert await r.xlen("edge:reply:f") == 2  # the answers went out
    assert await lines(r) == [] and await r.get(keyspace.served("openai")) is None
    assert len(ledger) == 2
    await ledger.flush()
    assert await lines(r) == ["req1 200", "req2 200"]
    assert await r.get(keyspace.served("openai")) == b"2"
    assert await r.hget(keyspace.breaker("m#0"), "ewma_ms") is not None


async def test_the_batch_leaves_on_its_own(r: Redis, lean: LeanRedis) -> None:
    await send(lean, Ledger(lean), 1)
    for _ in range(100):  # LEDGER_FLUSH_S, with room for a slow machine
        if await lines(r):
            break
        await asyncio.sleep(ledger_module.LEDGER_FLUSH_S)
    assert await lines(r) == ["req1 200"]


async def test_a_failure_or_a_possible_probe_writes_now_after_what_waited(r: Redis, lean: LeanRedis) -> None:
    ledger = Ledger(lean)
    await send(lean, ledger, 1)
    await send(lean, ledger, 2, status=500)
    assert await lines(r) == ["req1 200", "req2 500"] and len(ledger) == 0
    await send(lean, ledger, 3, record_now=True)
    assert await lines(r) == ["req1 200", "req2 500", "req3 200"] and len(ledger) == 0
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(job(3, record_now=True)), type=Job).record_now
