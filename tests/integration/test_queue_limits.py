"""Queue behaviour under load and at deadlines, with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter

import httpx
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Worker
from edge_agent.redis_server import RedisServer
from tests.integration.conftest import Samples, fake_stats, scrape, wait_until

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def _front_connections(redis_url: str) -> int:
    clients = redis.Redis.from_url(redis_url).client_list()
    return sum(1 for c in clients if c.get("name", "").startswith("edge-front:"))


def test_2000_waiting_requests_hold_a_bounded_number_of_redis_connections(stack: DevStack) -> None:
    assert stack.redis is not None
    front = stack.start_front()
    run = uuid.uuid4().hex

    async def one(client: httpx.AsyncClient, i: int) -> int:
        body = {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"[[fake:delay_ms=1500]] {run} {i}"}],
        }
        r = await client.post(f"{front.url}/v1/chat/completions", json=body, headers=AUTH)
        return r.status_code

    async def main() -> tuple[list[int], int]:
        limits = httpx.Limits(max_connections=2100, max_keepalive_connections=2100)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            tasks = [asyncio.create_task(one(client, i)) for i in range(2000)]
            peak = 0
            while not all(t.done() for t in tasks):
                peak = max(peak, await asyncio.to_thread(_front_connections, stack.redis.url))  # type: ignore[union-attr]
                await asyncio.sleep(0.2)
            return [t.result() for t in tasks], peak

    statuses, peak = asyncio.run(main())
    assert statuses.count(200) == 2000, Counter(statuses)
    assert 0 < peak <= 64


def _jobs_done(worker: Worker, before: Samples) -> dict[str, float]:
    """Jobs the worker finished since `before`, by status ("200", "expired", ...)."""
    moved: dict[str, float] = {}
    for (name, labels), value in scrape(worker.metrics_url).items():
        if name == "llm_edge_worker_jobs_total" and value != before.get((name, labels), 0.0):
            moved[dict(labels)["status"]] = value - before.get((name, labels), 0.0)
    return moved


def test_a_job_whose_deadline_passed_in_the_queue_never_reaches_the_upstream(stack: DevStack) -> None:
    private = RedisServer().start()
    try:
        env = {**stack.env, "REDIS_URL": private.url, "EDGE_REQUEST_TIMEOUT": "1"}
        worker = stack.start_worker("openai", env)
        front = stack.start_front(env, wait_path="/health/ready")
        late_model = f"gpt-deadline-{uuid.uuid4().hex[:8]}"
        queued = {"model": late_model, "messages": [{"role": "user", "content": "too late"}]}
        before = scrape(worker.metrics_url)
        # The only worker is frozen (still alive to the front), so the request waits in the queue...
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            r = httpx.post(f"{front.url}/v1/chat/completions", json=queued, headers=AUTH, timeout=10)
            waited = time.monotonic() - started
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        # ...gets 504 at its 1 s deadline, not earlier, and the worker, once it takes the job,
        # drops it instead of calling the upstream.
        assert r.status_code == 504 and waited >= 0.9
        done = wait_until(lambda: _jobs_done(worker, before), "the worker to take the queued job")
        assert done == {"expired": 1}
        assert late_model not in fake_stats(stack.upstream_url)["by_model"]
    finally:
        private.stop()
