"""Redis killed with SIGKILL under load and restarted (real processes, the official SDK): every
request is answered or cleanly refused within seconds of Redis coming back, none waits for its
deadline; a job a worker still runs is not run again; with an append-only file, queued jobs
survive and are answered once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.redis_server import RedisServer
from tests.integration.conftest import fake_stats

SLOW = "[[fake:delay_ms=2500]]"


@dataclass
class Outcome:
    started: float
    ended: float
    status: int  # 200, or the error status the SDK raised
    attempts: str | None = None  # x-edge-attempts of a 200


def ask(front: Front, text: str, stream: bool = False) -> Outcome:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=60)
    started = time.monotonic()
    messages = [{"role": "user", "content": text}]
    try:
        if stream:
            chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))  # type: ignore[arg-type]
            assert chunks[-1].choices[0].finish_reason is not None
            return Outcome(started, time.monotonic(), 200)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content
        return Outcome(started, time.monotonic(), 200, raw.headers.get("x-edge-attempts"))
    except openai.APIStatusError as e:
        assert isinstance(e.body, dict) and e.body.get("message"), e.body  # OpenAI's envelope
        return Outcome(started, time.monotonic(), e.status_code)
    except openai.APIError as e:  # a stream ended by an error event mid-way
        assert "lost" in str(e) or "Redis" in str(e) or e.message, e
        return Outcome(started, time.monotonic(), 599)


def stack_with(redis_server: RedisServer, tmp: Path, **env: str) -> DevStack:
    dev = DevStack(env_overrides=env, log_dir=tmp)
    dev.redis = redis_server.start()
    dev.start_upstream()
    dev.start_worker("openai")
    return dev


@pytest.fixture
def empty_restarts(tmp_path: Path) -> Iterator[tuple[DevStack, RedisServer]]:
    server = RedisServer()
    dev = stack_with(server, tmp_path)
    try:
        yield dev, server
    finally:
        dev.stop()


def test_requests_in_flight_when_redis_restarts_empty_end_within_seconds(
    empty_restarts: tuple[DevStack, RedisServer],
) -> None:
    dev, server = empty_restarts
    front = dev.start_front()
    outcomes: list[Outcome] = []
    stop = threading.Event()

    def client(stream: bool) -> None:
        while not stop.is_set():
            outcomes.append(ask(front, f"load {uuid.uuid4()} [[fake:delay_ms=300]]", stream))

    # A job a worker is running when Redis dies: its lease is written back, it is not run again.
    running: list[Outcome] = []
    # It outlasts the front's check of its jobs (Redis back, then SETTLE_S): only the lease its
    # worker wrote back keeps it from being taken for lost and asked again.
    longer = "[[fake:delay_ms=6000]]"
    held = threading.Thread(target=lambda: running.append(ask(front, f"held {uuid.uuid4()} {longer}")))
    threads = [threading.Thread(target=client, args=(i % 4 == 0,)) for i in range(12)]
    for thread in [held, *threads]:
        thread.start()
    time.sleep(1.5)
    server.crash()
    killed = time.monotonic()
    time.sleep(0.5)
    server.restart()  # empty: no jobs, no replies, no scripts
    restarted = time.monotonic()
    time.sleep(4.0)
    stop.set()
    for thread in [held, *threads]:
        thread.join(timeout=60)
        assert not thread.is_alive(), "a request is still waiting"
    assert outcomes and running
    # Nobody waited for a deadline: whatever was in flight ended within 10 s of the restart.
    assert max(o.ended for o in [*outcomes, *running]) < restarted + 10
    statuses = {o.status for o in outcomes}
    assert statuses <= {200, 503, 599}, statuses  # answered, or refused in OpenAI's envelope
    after = [o for o in outcomes if o.started > restarted + 1]
    assert after and all(o.status == 200 for o in after)  # serving again, by itself
    assert any(o.status == 200 and o.started < killed < o.ended for o in outcomes)  # in flight, answered
    assert running[0].status == 200 and running[0].attempts == "1", running  # not run twice
    # The README's numbers (run with -s to see them).
    first = min(o.ended for o in outcomes if o.status == 200 and o.ended > restarted) - killed
    last = max(o.ended for o in [*outcomes, *running] if o.started <= killed) - restarted
    refused = sum(1 for o in outcomes if o.status != 200)
    print(
        f"\nredis restart: down {restarted - killed:.2f} s; first answer {first:.2f} s after the kill;"
        f" the last one in flight at the kill ended {last:.2f} s after the restart;"
        f" {len(outcomes)} requests, {refused} refused"
    )


def test_with_an_append_only_file_queued_jobs_survive_a_crash_and_run_once(tmp_path: Path) -> None:
    server = RedisServer(appendonly=True)
    # One slot: a slow job holds it while the others wait in the queue when Redis dies.
    dev = stack_with(server, tmp_path, EDGE_WORKER_CONCURRENCY="1")
    try:
        front = dev.start_front()
        calls = fake_stats(dev.upstream_url)["requests"]
        results: list[Outcome] = []
        prompts = [f"held {uuid.uuid4()} {SLOW}"] + [f"queued {uuid.uuid4()}" for _ in range(5)]
        threads = []
        for prompt in prompts:
            threads.append(threading.Thread(target=lambda p=prompt: results.append(ask(front, p))))
            threads[-1].start()
            time.sleep(0.05)  # the slow one first
        time.sleep(1.5)  # the append-only file is fsynced every second
        server.crash()
        time.sleep(0.3)
        server.restart()
        for thread in threads:
            thread.join(timeout=60)
        assert [o.status for o in results] == [200] * 6, results
        assert {o.attempts for o in results} == {"1"}  # the same jobs, not asked again
        assert fake_stats(dev.upstream_url)["requests"] - calls == 6  # each run exactly once
    finally:
        dev.stop()
