"""Surprises a new user met in the first hour, each pinned: a client's own short deadline is not
the upstream's failure, one model's breaker leaves the provider's other models alone, /health
says so while a breaker is open, every deadline is one 504 the SDK does not retry, and cache
hits say who serves them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front


@pytest.fixture(scope="module")
def touchy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    """No config file, a breaker that opens after two failures, no retries."""
    dev = DevStack(
        env_overrides={"EDGE_MAX_ATTEMPTS": "1", "EDGE_BREAKER_FAILURES": "2", "EDGE_BREAKER_COOLDOWN": "60"},
        log_dir=Path(tmp_path_factory.mktemp("first-hour-logs")),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        yield dev.start_front(wait_path="/health/ready")
    finally:
        dev.stop()


def client(front: Front, retries: int = 2) -> openai.OpenAI:
    """The SDK as users run it: with its default two retries, unless a test says otherwise."""
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=retries, timeout=30)


def ask(front: Front, model: str, text: str = "", retries: int = 2, **kwargs: Any) -> Any:
    messages = [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]
    return client(front, retries).chat.completions.with_raw_response.create(
        model=model, messages=messages, **kwargs
    )


def health(front: Front) -> httpx.Response:
    return httpx.get(f"{front.url}/health")


def test_a_client_s_own_short_deadline_is_one_504_not_retried_and_opens_no_breaker(touchy: Front) -> None:
    model = f"gpt-slow-{uuid.uuid4().hex[:6]}"
    for _ in range(4):  # twice the breaker's failure threshold
        with pytest.raises(openai.InternalServerError) as caught:
            ask(touchy, model, "[[fake:delay_ms=600]]", extra_headers={"x-edge-timeout": "0.2"})
        assert caught.value.status_code == 504
        assert caught.value.response.headers["x-should-retry"] == "false"  # the SDK tried once
        assert caught.value.body["code"] == "deadline_exceeded"  # type: ignore[index]
    assert health(touchy).json()["breakers"][f"openai:{model}"] == "closed"
    assert ask(touchy, model).parse().choices[0].message.content


def test_one_model_s_open_breaker_leaves_the_provider_s_other_models_served(touchy: Front) -> None:
    broken = f"gpt-broken-{uuid.uuid4().hex[:6]}"
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            ask(touchy, broken, "[[fake:status=500]]")
    # The breaker opens for that model alone (refused at once, without a call upstream)...
    deadline = time.monotonic() + 10
    while health(touchy).json()["breakers"].get(f"openai:{broken}") != "open":
        assert time.monotonic() < deadline, "the breaker never opened"
        time.sleep(0.02)
    with pytest.raises(openai.InternalServerError) as caught:
        ask(touchy, broken, retries=0)  # (the SDK would wait out the Retry-After: the cooldown)
    assert caught.value.status_code == 503 and caught.value.body["code"] == "all_deployments_unavailable"  # type: ignore[index]
    # ...another model of the same provider is served, and /health says the gateway is degraded.
    other = ask(touchy, "gpt-4.1")
    assert other.parse().choices[0].message.content
    assert (other.headers["x-edge-provider"], other.headers["x-edge-model"]) == ("openai", "gpt-4.1")
    report = health(touchy)
    assert report.status_code == 503 and report.json()["status"] == "degraded"
    assert report.json()["breakers"][f"openai:{broken}"] == "open"
    assert report.json()["breakers"]["openai:gpt-4.1"] == "closed"


def test_cache_hits_say_which_provider_and_model_serve_them(touchy: Front) -> None:
    messages = [{"role": "user", "content": uuid.uuid4().hex}]
    c = client(touchy)
    miss = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    hit = c.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    streamed = c.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True
    )  # type: ignore[arg-type]
    assert miss.headers["x-edge-cache"] == "miss" and hit.headers["x-edge-cache"] == "hit-l1"
    for response in (hit, streamed):
        assert response.headers["x-edge-cache"] == "hit-l1"
        assert response.headers["x-edge-provider"] == miss.headers["x-edge-provider"] == "openai"
        assert response.headers["x-edge-model"] == miss.headers["x-edge-model"] == "gpt-4o-mini"
        assert response.headers["x-edge-attempts"] == "0"


def test_a_deployment_whose_key_variable_is_unset_is_skipped_and_named(tmp_path: Path) -> None:
    dev = DevStack(env_overrides={"EDGE_MAX_ATTEMPTS": "3"}, log_dir=tmp_path)
    try:
        dev.start_redis()
        dev.start_upstream()
        config = tmp_path / "models.yaml"
        config.write_text(
            "model_list:\n"
            "  - {model_name: gpt-x, provider: openai, model: keyless, api_key_env: EDGE_TEST_UNSET_KEY}\n"
            "  - {model_name: gpt-x, provider: openai, model: keyed}\n"
            "  - {model_name: gpt-only-keyless, provider: openai, model: keyless,\n"
            "     api_key_env: EDGE_TEST_UNSET_KEY}\n"
        )
        env = {**dev.env, "EDGE_CONFIG": str(config)}
        dev.start_worker("openai", env)
        front = dev.start_front(env)
        deadline = time.monotonic() + 10
        while health(front).json()["providers"]["openai"]["missing_keys"] != ["EDGE_TEST_UNSET_KEY"]:
            assert time.monotonic() < deadline, "the front never learnt of the missing key"
            time.sleep(0.02)
        assert health(front).json()["status"] == "degraded"
        served = ask(front, "gpt-x", retries=0)
        # Skipped like an open breaker: no call that the upstream would refuse with a 401.
        assert (served.headers["x-edge-model"], served.headers["x-edge-attempts"]) == ("keyed", "1")
        with pytest.raises(openai.InternalServerError) as caught:
            ask(front, "gpt-only-keyless", retries=0)
        assert caught.value.status_code == 503
        assert caught.value.body["code"] == "upstream_key_missing"  # type: ignore[index]
        assert "$EDGE_TEST_UNSET_KEY" in caught.value.body["message"]  # type: ignore[index]
        stats = httpx.get(f"{dev.upstream_url}/_fake/stats").json()
        assert stats["by_model"].get("keyless", 0) == 0
    finally:
        dev.stop()
