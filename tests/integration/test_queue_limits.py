"""Queue behaviour under load and at deadlines, with real processes."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import redis

from edge_agent.devstack import MASTER_KEY, DevStack
from edge_agent.redis_server import RedisServer

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
    assert statuses.count(200) == 2000
    assert 0 < peak <= 64


def test_a_job_whose_deadline_passed_in_the_queue_never_reaches_the_upstream(stack: DevStack) -> None:
    private = RedisServer().start()
    try:
        env = {
            **stack.env,
            "REDIS_URL": private.url,
            "EDGE_WORKER_CONCURRENCY": "1",
            "EDGE_REQUEST_TIMEOUT": "5",
        }
        stack.start_worker("openai", env)
        front = stack.start_front(env, wait_path="/health/ready")
        model = f"gpt-deadline-{uuid.uuid4().hex[:8]}"
        with httpx.Client(timeout=10, headers=AUTH) as client:
            # The only worker slot is busy for 2.5 s, so the second request waits in the queue...
            slow = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "[[fake:delay_ms=2500]] busy"}],
            }
            queued = {"model": model, "messages": [{"role": "user", "content": "too late"}]}
            with httpx.Client(timeout=10, headers=AUTH) as other:
                import threading

                busy = threading.Thread(
                    target=other.post, args=(f"{front.url}/v1/chat/completions",), kwargs={"json": slow}
                )
                busy.start()
                time.sleep(0.3)
                started = time.monotonic()
                r = client.post(
                    f"{front.url}/v1/chat/completions", json=queued, headers={"x-edge-timeout": "1"}
                )
                waited = time.monotonic() - started
                busy.join()
        # ...gets 504 at its 1 s deadline, and the worker drops it instead of calling upstream.
        assert r.status_code == 504 and 0.9 < waited < 2.0
        time.sleep(1.0)
        stats = httpx.get(f"{stack.upstream_url}/_fake/stats").json()
        assert model not in stats["by_model"]
    finally:
        private.stop()
