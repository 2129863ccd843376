"""SIGTERM drains (real processes, the official SDK): a worker claims nothing more, finishes the
jobs it holds, leaves the registry and exits; a front finishes the requests in flight. Nothing
is run twice and no client sees an error."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace
from tests.integration.conftest import fake_stats, wait_until


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    dev = DevStack(log_dir=tmp_path)
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.start_worker("openai")
        yield dev
    finally:
        dev.stop()


def ask(front: Front, text: str, out: list[tuple[int, str | None]]) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": text}],  # type: ignore[list-item]
    )
    out.append((raw.http_response.status_code, raw.headers.get("x-edge-attempts")))


def test_a_terminated_worker_finishes_its_jobs_and_leaves(stack: DevStack) -> None:
    """SIGTERM a worker with 10 requests in flight and another worker alive: all 10 answered,
    none called upstream twice; new requests go to the other worker meanwhile."""
    front = stack.start_front()
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    calls = fake_stats(stack.upstream_url)["requests"]
    slow: list[tuple[int, str | None]] = []
    threads = [
        threading.Thread(target=ask, args=(front, f"drain {uuid.uuid4()} [[fake:delay_ms=2500]]", slow))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()

    def held() -> dict[int, int]:
        """pid -> jobs it holds, for every registered worker."""
        holding = {}
        for member in r.zrange(keyspace.workers("openai"), 0, -1):
            name = member.decode()
            pid = next(w.pid for w in stack.workers if f"-{w.pid}-" in name)
            holding[pid] = r.scard(keyspace.running(name))
        return holding

    wait_until(lambda: sum(held().values()) == 10, "the 10 slow jobs held by the workers")
    pid, holding = max(held().items(), key=lambda item: item[1])
    assert holding >= 5
    holder = next(w for w in stack.workers if w.pid == pid)
    os.kill(pid, signal.SIGTERM)
    # While it drains, new requests go to the other worker at once.
    fast: list[tuple[int, str | None]] = []
    for _ in range(3):
        ask(front, f"meanwhile {uuid.uuid4()}", fast)
    assert fast == [(200, "1")] * 3
    assert holder.poll() is None  # still finishing its jobs
    for thread in threads:
        thread.join(timeout=30)
    assert slow == [(200, "1")] * 10  # answered by the workers that had them, not run again
    assert holder.process.wait(timeout=10) == 0
    assert fake_stats(stack.upstream_url)["requests"] - calls == 13
    member_ids = [m.decode() for m in r.zrange(keyspace.workers("openai"), 0, -1)]
    assert not any(f"-{pid}-" in m for m in member_ids)  # it left the registry


def test_a_terminated_front_finishes_the_requests_in_flight(stack: DevStack) -> None:
    front = stack.start_front()
    answers: list[tuple[int, str | None]] = []
    threads = [
        threading.Thread(
            target=ask, args=(front, f"front drain {uuid.uuid4()} [[fake:delay_ms=1500]]", answers)
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    wait_until(lambda: sum(int(v) for v in _loads(stack)) == 3, "the three requests upstream")
    started = time.monotonic()
    front.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [(200, "1")] * 3
    front.process.wait(timeout=10)
    assert time.monotonic() - started < 10


def _loads(stack: DevStack) -> list[bytes]:
    assert stack.redis is not None
    return redis.Redis.from_url(stack.redis.url).hvals(keyspace.load("openai"))  # type: ignore[return-value]
