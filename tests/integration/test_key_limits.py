"""A virtual key's rpm_limit and max_parallel_requests, enforced exactly across two fronts on one
Redis (real processes): the check and the charge are in the round trip that enqueues the job,
cache hits are free, and a parallel slot comes back when its worker dies and the job is re-run."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace
from tests.integration.conftest import two_fronts, wait_until

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
WINDOW_S = 3600  # EDGE_KEY_WINDOW_S: no window boundary falls inside a test (checked below)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    yield from two_fronts(tmp_path_factory, "key-limits-logs", WINDOW_S)


@pytest.fixture(scope="module")
def fronts(stack: DevStack) -> tuple[Front, Front]:
    return stack.fronts  # type: ignore[attr-defined,no-any-return]


@pytest.fixture
def r(stack: DevStack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.env["REDIS_URL"])
    try:
        yield client
    finally:
        client.close()


def new_key(fronts: tuple[Front, Front], **limits: Any) -> tuple[str, str]:
    """(key, key_id) of a key allowed gpt-4o-mini only, once both fronts know it (probed with a
    model it may not use: a 403, which charges nothing)."""
    answer = httpx.post(
        f"{fronts[0].url}/key/generate",
        json={"key_alias": "team-limits", "models": ["gpt-4o-mini"], **limits},
        headers=MASTER,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    key, key_id = answer.json()["key"], answer.json()["key_id"]
    for front in fronts:
        wait_until(lambda: post(front, key, "probe", model="gpt-4o").status_code == 403, "key loaded")  # noqa: B023
    return key, key_id


def post(front: Front, key: str, text: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        f"{front.url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": text}]},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def concurrently(calls: list[tuple[Front, str, str]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda c: post(*c), calls))


def test_rpm_limit_is_exact_across_two_fronts_and_cache_hits_are_free(fronts: tuple[Front, Front]) -> None:
    if WINDOW_S - time.time() % WINDOW_S < 30:  # never straddle a window boundary
        time.sleep(WINDOW_S - time.time() % WINDOW_S + 1)
    key, _ = new_key(fronts, rpm_limit=5)
    prompts = [f"rpm {uuid.uuid4()}" for _ in range(20)]
    answers = concurrently([(fronts[i % 2], key, p) for i, p in enumerate(prompts)])
    ok = [(p, a) for p, a in zip(prompts, answers, strict=True) if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) == 5 and len(refused) == 15, [a.status_code for a in answers]
    remaining = sorted(int(a.headers["x-ratelimit-remaining-requests"]) for _, a in ok)
    assert remaining == [0, 1, 2, 3, 4]  # each success saw the count after its own charge
    for _, a in ok:
        assert a.headers["x-ratelimit-limit-requests"] == "5"
        assert a.headers["x-ratelimit-reset-requests"].endswith("s")
    for a in refused:
        error = a.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "requests per minute" in error["message"] and "team-limits" in error["message"]
        assert key.split("-", 3)[3] not in a.text  # never the secret (which may hold dashes)
        assert 0 < int(a.headers["retry-after"]) <= WINDOW_S
        assert a.headers["x-ratelimit-limit-requests"] == "5"
        assert a.headers["x-ratelimit-remaining-requests"] == "0"
        assert a.headers["x-ratelimit-reset-requests"] == a.headers["retry-after"] + "s"
    # Past the limit, cache hits still succeed on either front: they never reach upstream.
    for i, (prompt, _) in enumerate(ok):
        hit = post(fronts[(i + 1) % 2], key, prompt)
        assert hit.status_code == 200 and hit.headers["x-edge-cache"].startswith("hit"), hit.text
    assert post(fronts[0], key, f"another {uuid.uuid4()}").status_code == 429


def test_max_parallel_requests_admits_exactly_that_many_and_frees_the_slots(
    fronts: tuple[Front, Front], r: redis.Redis
) -> None:
    key, key_id = new_key(fronts, max_parallel_requests=2)

    def slow() -> str:
        return f"par {uuid.uuid4()} [[fake:delay_ms=1500]]"

    answers = concurrently([(fronts[i % 2], key, slow()) for i in range(6)])
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 200, 429, 429, 429, 429], statuses
    for a in answers:
        if a.status_code == 429:
            error = a.json()["error"]
            assert error["code"] == "rate_limit_exceeded" and "parallel requests" in error["message"]
            assert a.headers["retry-after"] == "1"
            assert {"x-ratelimit-limit-requests", "x-ratelimit-reset-requests"} <= set(a.headers)
    # The workers' answers released both slots: the next ones are admitted again.
    assert r.zcard(keyspace.key_parallel(key_id)) == 0
    again = concurrently([(fronts[i % 2], key, slow()) for i in range(2)])
    assert [a.status_code for a in again] == [200, 200], [a.text for a in again]


def test_a_killed_workers_slot_comes_back_when_its_job_is_rerun(
    stack: DevStack, fronts: tuple[Front, Front], r: redis.Redis
) -> None:
    key, key_id = new_key(fronts, max_parallel_requests=1)
    held: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: held.append(post(fronts[0], key, f"kill {uuid.uuid4()} [[fake:delay_ms=2500]]"))
    )
    slow.start()
    worker = next(w for w in stack.workers if w.provider == "openai" and w.poll() is None)
    wait_until(
        lambda: any(
            r.scard(keyspace.running(m.decode())) for m in r.zrange(keyspace.workers("openai"), 0, -1)
        ),
        "the slow job running",
    )
    assert post(fronts[1], key, f"busy {uuid.uuid4()}").status_code == 429  # the slot is taken
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait()
    killed_at = time.monotonic()
    time.sleep(1.0)  # nobody runs the job now; its slot is still held (it expires at its deadline)
    assert r.zcard(keyspace.key_parallel(key_id)) == 1
    stack.start_worker("openai")  # reaps the dead worker: its job runs again and frees the slot
    slow.join(timeout=60)
    assert held and held[0].status_code == 200, held[0].text if held else "no answer"
    assert r.zcard(keyspace.key_parallel(key_id)) == 0
    assert time.monotonic() - killed_at < 30  # released by the re-run, long before any expiry
    assert post(fronts[1], key, f"after {uuid.uuid4()}").status_code == 200
