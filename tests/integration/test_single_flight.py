"""Single-flight across the cluster: identical concurrent misses on two fronts share one upstream
call, streamed or not, joined before or after the stream began; a failed or abandoned leader
leaves no follower waiting; a lone client that leaves cancels its upstream call."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
from conftest import fake_stats, sample, scrape, wait_until

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace

MODEL = "gpt-4o-mini"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(
        env_overrides={"EDGE_MAX_ATTEMPTS": "2", "EDGE_BREAKER_FAILURES": "1000000"},
        log_dir=Path(tmp_path_factory.mktemp("single_flight")),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.start_worker("openai")
        dev.fronts = (dev.start_front(), dev.start_front())  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


def fronts(stack: DevStack) -> tuple[Front, Front]:
    return stack.fronts  # type: ignore[attr-defined,no-any-return]


def calls(stack: DevStack) -> int:
    return int(fake_stats(stack.upstream_url)["requests"])


def clients(stack: DevStack) -> list[openai.AsyncOpenAI]:
    return [
        openai.AsyncOpenAI(base_url=f"{f.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=60)
        for f in fronts(stack)
    ]


def prompt(marker: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"single flight {uuid.uuid4()} {marker}"}]


async def ask_all(stack: DevStack, messages: list[dict[str, str]], n: int) -> list[tuple[str, str]]:
    """`n` identical requests at once, alternating fronts: (x-edge-cache, answer text) each."""
    sdks = clients(stack)

    async def one(i: int) -> tuple[str, str]:
        raw = await sdks[i % 2].chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
        )
        return raw.headers["x-edge-cache"], raw.parse().choices[0].message.content or ""

    return await asyncio.gather(*(one(i) for i in range(n)))


def test_a_hundred_identical_misses_over_two_fronts_make_one_upstream_call(stack: DevStack) -> None:
    before = calls(stack)
    answers = asyncio.run(ask_all(stack, prompt("[[fake:delay_ms=1500]]"), 100))
    assert calls(stack) - before == 1
    tiers = Counter(tier for tier, _ in answers)
    assert tiers["miss"] == 1 and tiers["joined"] >= 90, tiers  # the rest, if late, hit the cache
    assert len({text for _, text in answers}) == 1  # one answer, served a hundred times


def test_streams_join_before_and_after_the_first_chunk_and_get_every_chunk(stack: DevStack) -> None:
    messages = prompt("[[fake:chunk_delay_ms=60]] [[fake:words=30]]")
    before = calls(stack)
    sdks = clients(stack)

    async def stream(i: int, started: asyncio.Event | None) -> tuple[str, str]:
        raw = await sdks[i % 2].chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
            stream=True,
        )
        text = ""
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                if started is not None:
                    started.set()
        return raw.headers["x-edge-cache"], text

    async def plain(i: int) -> tuple[str, str]:
        raw = await sdks[i % 2].chat.completions.with_raw_response.create(
            model=MODEL,
            messages=messages,  # type: ignore[arg-type]
        )
        return raw.headers["x-edge-cache"], raw.parse().choices[0].message.content or ""

    async def main() -> list[tuple[str, str]]:
        started = asyncio.Event()
        early = [asyncio.create_task(stream(0, started))]
        early += [asyncio.create_task(stream(i, None)) for i in range(1, 6)]
        await asyncio.wait_for(started.wait(), 20)  # the stream is under way: now join it late
        late = [asyncio.create_task(stream(i, None)) for i in range(6, 12)]
        late += [asyncio.create_task(plain(i)) for i in range(12, 16)]
        return await asyncio.gather(*early, *late)

    answers = asyncio.run(main())
    assert calls(stack) - before == 1
    assert Counter(tier for tier, _ in answers) == Counter({"miss": 1, "joined": 15})
    texts = {text for _, text in answers}
    assert len(texts) == 1 and len(next(iter(texts)).split()) >= 30  # whole, for late joiners too


def test_a_failed_leader_releases_every_follower_who_then_share_one_retry(stack: DevStack) -> None:
    # The first upstream call fails (500, retryable); the next succeeds.
    messages = prompt("[[fake:status=500]] [[fake:times=1]] [[fake:delay_ms=800]]")
    before = calls(stack)
    answers = asyncio.run(ask_all(stack, messages, 10))
    assert {tier for tier, _ in answers} <= {"miss", "joined", "hit-l1", "hit-l2"}
    assert len({text for _, text in answers}) == 1
    assert calls(stack) - before == 2  # the failed call and one retry shared by all ten


def test_a_leader_whose_worker_dies_leaves_no_follower_waiting(stack: DevStack) -> None:
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    messages = prompt("[[fake:delay_ms=2500]]")

    def holder() -> int | None:
        for member in r.zrange(keyspace.workers("openai"), 0, -1):
            if r.scard(keyspace.running(member.decode())):
                return next(w.pid for w in stack.workers if f"-{w.pid}-" in member.decode())
        return None

    async def main() -> list[tuple[str, str]]:
        asking = asyncio.create_task(ask_all(stack, messages, 6))
        pid = await asyncio.to_thread(wait_until, holder, "a worker holding the flight's job")
        os.kill(pid, signal.SIGKILL)
        return await asyncio.wait_for(asking, 30)

    started = time.monotonic()
    try:
        answers = asyncio.run(main())
    finally:
        stack.workers[:] = [w for w in stack.workers if w.poll() is None]
        stack.start_worker("openai")  # the next tests' second worker
    assert len({text for _, text in answers}) == 1 and all(text for _, text in answers)
    assert time.monotonic() - started < 25


def test_a_leader_whose_client_leaves_keeps_the_call_for_its_followers(stack: DevStack) -> None:
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    messages = prompt("[[fake:delay_ms=1500]]")
    before = calls(stack)
    leader_front, other = fronts(stack)
    body = {"model": MODEL, "messages": messages}
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}

    def flight_keys(suffix: str = "") -> list[bytes]:
        return [k for k in r.scan_iter(match=keyspace.flight("*")) if k.endswith(suffix.encode())]

    async def main() -> list[tuple[str, str]]:
        async with httpx.AsyncClient(timeout=30) as http:
            url = f"{leader_front.url}/v1/chat/completions"
            leader = asyncio.create_task(http.post(url, json=body, headers=headers))
            await asyncio.to_thread(wait_until, flight_keys, "the leader's flight")
            followers = asyncio.create_task(ask_all(stack, messages, 4))

            def all_joined() -> bool:
                joined = flight_keys(":f")
                return bool(joined) and r.scard(joined[0]) == 4

            await asyncio.to_thread(wait_until, all_joined, "four followers")
            leader.cancel()  # the leader's client leaves, its followers still waiting
            await asyncio.gather(leader, return_exceptions=True)
        return await followers

    answers = asyncio.run(main())
    assert [tier for tier, _ in answers] == ["joined"] * 4
    assert calls(stack) - before == 1
    del other


def cancelled_jobs(stack: DevStack) -> float:
    """Jobs the workers ended as cancelled by their clients."""
    counts = [scrape(w.metrics_url) for w in stack.workers]
    return sum(sample(c, "llm_edge_worker_jobs_total", provider="openai", status="cancelled") for c in counts)


def test_a_lone_client_that_leaves_cancels_its_upstream_call(stack: DevStack) -> None:
    assert stack.redis is not None
    front = fronts(stack)[0]
    cancelled = fake_stats(stack.upstream_url)["cancelled"]
    jobs_cancelled = cancelled_jobs(stack)
    body = {"model": MODEL, "messages": prompt("[[fake:delay_ms=3000]]")}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            f"{front.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=httpx.Timeout(0.5, connect=10),
        )
    wait_until(
        lambda: fake_stats(stack.upstream_url)["cancelled"] > cancelled,
        "the upstream call to be cancelled",
        timeout_s=2.0,  # well before the 3 s answer would have come
    )
    r = redis.Redis.from_url(stack.redis.url)
    assert not r.keys(keyspace.flight("*"))  # the flight ended with its job
    # Its worker ended it as cancelled by its client, not as a stop that leaves it for another.
    wait_until(lambda: cancelled_jobs(stack) == jobs_cancelled + 1, "the worker to count the job cancelled")


def test_no_store_and_no_cache_requests_take_no_part(stack: DevStack) -> None:
    messages = prompt("[[fake:delay_ms=800]]")
    before = calls(stack)
    sdks = clients(stack)

    async def main() -> list[str]:
        async def one(i: int, control: str) -> str:
            raw = await sdks[i % 2].chat.completions.with_raw_response.create(
                model=MODEL,
                messages=messages,  # type: ignore[arg-type]
                extra_headers={"Cache-Control": control},
            )
            return raw.headers["x-edge-cache"]

        return await asyncio.gather(*(one(i, c) for i, c in enumerate(["no-cache", "no-store", "no-cache"])))

    assert asyncio.run(main()) == ["miss"] * 3
    assert calls(stack) - before == 3


def test_flight_keys_are_gone_once_answered(stack: DevStack) -> None:
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    asyncio.run(ask_all(stack, prompt("[[fake:delay_ms=300]]"), 4))
    leftovers = [k.decode() for k in r.scan_iter(match=keyspace.flight("*"))]
    assert leftovers == []
