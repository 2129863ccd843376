"""A virtual key's tpm_limit and max_budget across two fronts on one Redis (real processes): each
request reserves its estimated tokens and worst-case cost at admission, in the enqueue's round
trip; the worker books the real usage and cost when it publishes the answer; the key's usage is
in /key/info. The official SDK sees OpenAI's errors (a budget is `insufficient_quota`, never
retried)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import msgspec
import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_front.reservation import TokenEstimator, completion_tokens, worst_case_usd
from shared import keyspace
from shared.config import Deployment
from shared.wire import ChatCompletionRequest
from tests.integration.conftest import fake_stats, two_fronts, wait_until

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
WINDOW_S = 3600  # EDGE_KEY_WINDOW_S: no window boundary falls inside a test (checked below)
MAX_TOKENS = 50  # the fake upstream answers 8-40 words: never more than a request reserves


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    yield from two_fronts(tmp_path_factory, "key-budget-logs", WINDOW_S)


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


def new_key(fronts: tuple[Front, Front], **settings: Any) -> tuple[str, str]:
    answer = httpx.post(
        f"{fronts[0].url}/key/generate",
        json={"key_alias": "team-budget", "models": ["gpt-4o-mini"], **settings},
        headers=MASTER,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    key, key_id = answer.json()["key"], answer.json()["key_id"]
    for front in fronts:
        wait_until(lambda: post(front, key, "probe", model="gpt-4o").status_code == 403, "key loaded")  # noqa: B023
    return key, key_id


def body(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": MAX_TOKENS}


def post(front: Front, key: str, text: str, model: str = "gpt-4o-mini") -> httpx.Response:
    return httpx.post(
        f"{front.url}/v1/chat/completions",
        json=body(text, model),
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def concurrently(fronts: tuple[Front, Front], key: str, prompts: list[str]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(prompts)) as pool:
        return list(pool.map(lambda ip: post(fronts[ip[0] % 2], key, ip[1]), enumerate(prompts)))


def info(front: Front, key_id: str) -> dict[str, Any]:
    answer = httpx.get(f"{front.url}/key/info", params={"key": key_id}, headers=MASTER, timeout=10)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["info"]
    return result


def reservation(text: str) -> tuple[int, float]:
    """(tokens, USD) the gateway reserves for `body(text)`: computed as the front does."""
    estimator = TokenEstimator()
    asyncio.run(estimator.ready())
    chat = msgspec.convert(body(text), ChatCompletionRequest)
    prompt, most = estimator.prompt(chat), completion_tokens(chat, 4096)
    listed = Deployment(
        model_name="gpt-4o-mini", provider="openai", model="gpt-4o-mini", base_url="x", api_key_env="K"
    )
    return prompt + most, worst_case_usd(listed, "gpt-4o-mini", prompt, most)


def away_from_a_window_boundary() -> None:
    if WINDOW_S - time.time() % WINDOW_S < 30:
        time.sleep(WINDOW_S - time.time() % WINDOW_S + 1)


def test_twenty_concurrent_requests_overshoot_a_budget_by_at_most_one_reservation(
    fronts: tuple[Front, Front], r: redis.Redis
) -> None:
    prompts = [f"budget {uuid.uuid4()}" for _ in range(20)]
    _, reserved_usd = reservation(prompts[0])
    budget = 3.5 * reserved_usd  # room for three or four requests' worst cases
    key, key_id = new_key(fronts, max_budget=budget)
    answers = concurrently(fronts, key, prompts)
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(refused) == 20 and 1 <= len(ok) < 20, [a.status_code for a in answers]
    for a in refused:
        error = a.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded"), error
        assert a.headers["x-should-retry"] == "false"
        assert "team-budget" in error["message"] and "max_budget" in error["message"]
        assert "does not reset" in error["message"]  # no budget_duration
    spent = info(fronts[1], key_id)
    booked = sum(float(a.headers["x-edge-cost-usd"]) for a in ok)
    assert spent["spend"] == pytest.approx(booked, rel=1e-9) and spent["spend"] > 0
    assert spent["spend"] <= budget + reserved_usd  # the bound: one request's reservation
    assert spent["requests"] == len(ok)
    assert spent["prompt_tokens"] > 0 and spent["completion_tokens"] > 0
    assert r.zcard(keyspace.key_parallel(key_id)) == 0  # every reservation went with its answer
    # Once spent, the key is refused until its budget is raised; cache hits stay free.
    while post(fronts[0], key, f"more {uuid.uuid4()}").status_code == 200:
        assert info(fronts[0], key_id)["spend"] <= budget + reserved_usd
    hit = post(fronts[1], key, prompts[answers.index(ok[0])])
    assert hit.status_code == 200 and hit.headers["x-edge-cache"].startswith("hit")


def test_the_sdk_sees_an_exhausted_budget_as_insufficient_quota_and_does_not_retry(
    stack: DevStack, fronts: tuple[Front, Front]
) -> None:
    key, _ = new_key(fronts, max_budget=0)
    client = openai.OpenAI(base_url=f"{fronts[0].url}/v1", api_key=key, max_retries=2)
    calls = fake_stats(stack.upstream_url)["requests"]
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**body(f"sdk {uuid.uuid4()}"))
    assert refused.value.code == "budget_exceeded" and refused.value.type == "insufficient_quota"
    assert time.monotonic() - started < 0.5  # no retry with backoff
    assert fake_stats(stack.upstream_url)["requests"] == calls


def test_a_budget_period_resets_the_spend(fronts: tuple[Front, Front]) -> None:
    key, key_id = new_key(fronts, max_budget=1e-12, budget_duration="4s")
    first = post(fronts[0], key, f"period {uuid.uuid4()}")  # admitted: nothing spent yet
    assert first.status_code == 200, first.text
    refused = post(fronts[1], key, f"period {uuid.uuid4()}")
    assert refused.status_code == 429 and "resets at" in refused.json()["error"]["message"]
    reset_at = info(fronts[0], key_id)["budget_reset_at"]
    assert reset_at is not None
    wait_until(lambda: post(fronts[0], key, f"period {uuid.uuid4()}").status_code == 200, "a new period", 10)
    assert info(fronts[0], key_id)["budget_reset_at"] != reset_at


def test_tpm_limit_reserves_estimates_books_real_tokens_and_is_exact_across_fronts(
    fronts: tuple[Front, Front], r: redis.Redis
) -> None:
    away_from_a_window_boundary()
    prompts = [f"tpm {uuid.uuid4()}" for _ in range(20)]
    reserved_tokens, _ = reservation(prompts[0])
    tpm = 3 * reserved_tokens + reserved_tokens // 2
    key, key_id = new_key(fronts, tpm_limit=tpm)
    answers = concurrently(fronts, key, prompts)
    ok = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert len(ok) + len(refused) == 20 and 1 <= len(ok) < 20, [a.status_code for a in answers]
    for a in ok:
        assert a.headers["x-ratelimit-limit-tokens"] == str(tpm)
        assert 0 <= int(a.headers["x-ratelimit-remaining-tokens"]) < tpm
        assert a.headers["x-ratelimit-reset-tokens"].endswith("s")
    for a in refused:
        error = a.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and "tokens per minute" in error["message"]
        assert a.headers["x-ratelimit-remaining-tokens"] == "0" and int(a.headers["retry-after"]) > 0
    used = sum(a.json()["usage"]["total_tokens"] for a in ok)
    window = int(time.time() // WINDOW_S)
    assert int(r.get(keyspace.key_tpm(key_id, window)) or 0) == used  # the real tokens, booked
    assert used <= tpm + reserved_tokens
    assert r.zcard(keyspace.key_parallel(key_id)) == 0


def test_a_stream_is_admitted_booked_and_refused_like_any_request(fronts: tuple[Front, Front]) -> None:
    key, key_id = new_key(fronts, max_budget=1e-12)
    client = openai.OpenAI(base_url=f"{fronts[0].url}/v1", api_key=key, max_retries=0)
    chunks = list(client.chat.completions.create(**body(f"stream {uuid.uuid4()}"), stream=True))
    assert chunks and chunks[-1].choices[0].finish_reason is not None
    used = wait_until(lambda: info(fronts[1], key_id)["requests"] == 1 and info(fronts[1], key_id), "booked")
    assert used["spend"] > 0 and used["completion_tokens"] > 0
    with pytest.raises(openai.RateLimitError) as refused:  # before any byte of a stream
        list(client.chat.completions.create(**body(f"stream {uuid.uuid4()}"), stream=True))
    assert refused.value.code == "budget_exceeded"


def test_a_deleted_keys_lifetime_spend_expires_with_its_tombstone(
    fronts: tuple[Front, Front], r: redis.Redis
) -> None:
    key, key_id = new_key(fronts, max_budget=10)
    assert post(fronts[0], key, f"spend {uuid.uuid4()}").status_code == 200
    spend = keyspace.key_spend(key_id, "life")
    wait_until(lambda: r.exists(spend), "the answer booked")
    assert r.ttl(spend) == -1  # a lifetime budget: no expiry while the key lives
    deleted = httpx.post(f"{fronts[0].url}/key/delete", json={"keys": [key_id]}, headers=MASTER, timeout=10)
    assert deleted.status_code == 200, deleted.text
    assert 0 < r.ttl(spend) <= 30 * 86400
