"""The core request path with real processes and the official OpenAI SDK as the client."""

from __future__ import annotations

import socket
import uuid

import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_agent.redis_server import RedisServer
from tests.integration.conftest import sample, scrape, sdk

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def unique(text: str = "hello") -> list[dict[str, str]]:
    """A prompt no other test sends, so cache state never leaks between tests."""
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def create(client: openai.OpenAI, model: str = "gpt-4o-mini", **kwargs):
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=kwargs.pop("messages", unique()), **kwargs
    )
    return raw.headers, raw.parse()


def test_openai_success(client: openai.OpenAI) -> None:
    headers, completion = create(client, "gpt-4o-mini", temperature=0)
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    assert headers["x-edge-cache"] == "miss"
    assert headers["x-request-id"]
    assert (headers["x-edge-provider"], headers["x-edge-model"], headers["x-edge-attempts"]) == (
        "openai",
        "gpt-4o-mini",
        "1",
    )


def test_anthropic_success_is_openai_shaped(client: openai.OpenAI) -> None:
    headers, completion = create(
        client,
        "claude-sonnet-4-5",
        messages=[{"role": "system", "content": "be brief"}, *unique()],
        max_tokens=200,
        stop=["zzz"],
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert headers["x-edge-cache"] == "miss"


def test_anthropic_tool_calls_round_trip(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            },
        }
    ]
    _, first = create(client, "claude-sonnet-4-5", tools=tools)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls" and call.function.name == "lookup"
    messages = [
        *unique("use the tool"),
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    _, second = create(client, "claude-sonnet-4-5", tools=tools, messages=messages)
    assert second.choices[0].message.content


def test_openai_tool_calls(client: openai.OpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    _, completion = create(client, "gpt-4o", tools=tools)
    assert completion.choices[0].message.tool_calls[0].function.name == "lookup"


def test_l1_hit_after_miss(client: openai.OpenAI) -> None:
    messages = unique()
    h1, first = create(client, messages=messages)
    h2, second = create(client, messages=messages)
    assert (h1["x-edge-cache"], h2["x-edge-cache"]) == ("miss", "hit-l1")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id == first.id


def test_l2_hit_from_a_second_front(stack: DevStack, client: openai.OpenAI) -> None:
    messages = unique()
    create(client, messages=messages)
    other = stack.start_front()
    h, _ = create(sdk(other), messages=messages)
    assert h["x-edge-cache"] == "hit-l2"
    h, _ = create(sdk(other), messages=messages)
    assert h["x-edge-cache"] == "hit-l1"  # the L2 hit filled the second front's L1


def test_cache_control_no_cache_and_no_store(client: openai.OpenAI) -> None:
    messages = unique()
    create(client, messages=messages)
    h, _ = create(client, messages=messages, extra_headers={"Cache-Control": "no-cache"})
    assert h["x-edge-cache"] == "miss"
    stored_nowhere = unique()
    h, _ = create(client, messages=stored_nowhere, extra_headers={"Cache-Control": "no-store"})
    h, _ = create(client, messages=stored_nowhere)
    assert h["x-edge-cache"] == "miss"


def test_request_id_is_echoed(front: Front) -> None:
    r = httpx.post(
        f"{front.url}/v1/chat/completions",
        headers={**AUTH, "x-request-id": "my-trace-1"},
        json={"model": "gpt-4o-mini", "messages": unique()},
    )
    assert r.status_code == 200 and r.headers["x-request-id"] == "my-trace-1"


# ---- errors, each arriving as the SDK's own exception class ------------------------------


def test_invalid_json_is_400(front: Front) -> None:
    r = httpx.post(
        f"{front.url}/v1/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=b"{"
    )
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_schema_error_is_bad_request_with_param(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=unique(), temperature=7)
    assert caught.value.body["param"] == "temperature"


def test_missing_and_wrong_key_are_401(front: Front) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{front.url}/v1", api_key="sk-wrong", max_retries=0).chat.completions.create(
            model="gpt-4o", messages=unique()
        )
    r = httpx.post(f"{front.url}/v1/chat/completions", json={"model": "gpt-4o", "messages": unique()})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.get(f"{front.url}/v1/models", headers={"x-api-key": MASTER_KEY})
    assert r.status_code == 200


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=unique())
    assert caught.value.body["code"] == "model_not_found"


def test_body_over_the_limit_is_413(front: Front) -> None:
    big = (
        b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "'
        + b"x" * (10 * 1024 * 1024)
        + b'"}]}'
    )
    r = httpx.post(
        f"{front.url}/v1/chat/completions", headers={**AUTH, "content-type": "application/json"}, content=big
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_upstream_429_is_rate_limit_error_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=unique("[[fake:status=429]]"))
    assert caught.value.response.headers.get("retry-after")
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=unique("[[fake:status=429]]"))
    assert caught.value.body["type"] == "rate_limit_error"


def test_upstream_400_keeps_status_and_message(client: openai.OpenAI) -> None:
    for model in ("gpt-4o", "claude-sonnet-4-5"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model=model, messages=unique("[[fake:status=400]]"))
        assert caught.value.body["message"]


def test_anthropic_cannot_honour_n_above_1(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude-sonnet-4-5", messages=unique(), n=2)
    assert caught.value.body["param"] == "n"


def test_upstream_5xx_and_dropped_connection_are_502(client: openai.OpenAI) -> None:
    for marker in ("[[fake:status=500]]", "[[fake:status=503]]", "[[fake:drop]]"):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=unique(marker))
        assert caught.value.status_code == 502, marker


def test_upstream_timeout_is_504(stack: DevStack) -> None:
    env = {**stack.env, "EDGE_REQUEST_TIMEOUT": "1"}
    front = stack.start_front(env)
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(front).chat.completions.create(model="gpt-4o", messages=unique("[[fake:timeout]]"))
    assert caught.value.status_code == 504


def test_redis_unreachable_on_a_miss_is_503_with_retry_after(stack: DevStack) -> None:
    with socket.socket() as held:  # bound, never listening: connections are refused, nobody else binds it
        held.bind(("127.0.0.1", 0))
        dead_url = f"redis://127.0.0.1:{held.getsockname()[1]}/0"
        front = stack.start_front({**stack.env, "REDIS_URL": dead_url}, wait_path="/health/live")
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(front).chat.completions.create(model="gpt-4o", messages=unique())
        assert caught.value.status_code == 503
        assert caught.value.response.headers["retry-after"]
        assert httpx.get(f"{front.url}/health/ready").status_code == 503


def test_provider_without_workers_is_503_not_a_hang(stack: DevStack) -> None:
    empty = RedisServer().start()
    try:
        front = stack.start_front({**stack.env, "REDIS_URL": empty.url}, wait_path="/health/live")
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(front, timeout=10).chat.completions.create(model="gpt-4o", messages=unique())
        assert caught.value.status_code == 503 and caught.value.body["code"] == "no_worker"
    finally:
        empty.stop()


# ---- models, health, metrics --------------------------------------------------------------


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert "gpt-4o-mini" in ids and any(i.startswith("claude-") for i in ids)


def test_health_endpoints_are_open(front: Front) -> None:
    assert httpx.get(f"{front.url}/health/live").json() == {"status": "ok"}
    assert httpx.get(f"{front.url}/health/ready").status_code == 200
    detail = httpx.get(f"{front.url}/health").json()
    assert detail["status"] == "ok" and detail["redis"]["status"] == "ok"
    assert detail["providers"]["openai"]["worker_alive"] and detail["providers"]["anthropic"]["worker_alive"]


def test_metrics_count_requests_cache_tiers_tokens_and_durations(
    client: openai.OpenAI, front: Front, workers: dict[str, Worker]
) -> None:
    front_metrics, worker_metrics = f"{front.url}/metrics", workers["openai"].metrics_url
    front_before, worker_before = scrape(front_metrics), scrape(worker_metrics)
    messages = unique()
    h1, first = create(client, messages=messages)
    h2, _ = create(client, messages=messages)
    assert (h1["x-edge-cache"], h2["x-edge-cache"]) == ("miss", "hit-l1")
    with pytest.raises(openai.RateLimitError):
        create(client, "gpt-4o", messages=unique("[[fake:status=429]]"))
    front_after, worker_after = scrape(front_metrics), scrape(worker_metrics)
    assert first.usage is not None and first.usage.prompt_tokens > 0 and first.usage.completion_tokens > 0

    def moved(name: str, **labels: str) -> float:
        return sample(front_after, name, **labels) - sample(front_before, name, **labels)

    assert moved("llm_edge_requests_total", provider="openai", model="gpt-4o-mini", status="200") == 2
    assert moved("llm_edge_requests_total", provider="openai", model="gpt-4o", status="429") == 1
    assert moved("llm_edge_cache_hits_total", tier="l1") == 1
    assert moved("llm_edge_cache_hits_total", tier="l2") == 0
    assert moved("llm_edge_cache_misses_total", tier="l1") == 2
    assert moved("llm_edge_cache_misses_total", tier="l2") == 2
    for kind, count in (("prompt", first.usage.prompt_tokens), ("completion", first.usage.completion_tokens)):
        assert moved("llm_edge_tokens_total", provider="openai", model="gpt-4o-mini", type=kind) == count
    mini = {"provider": "openai", "model": "gpt-4o-mini"}
    assert moved("llm_edge_request_duration_ms_count", **mini, cache="miss") == 1
    assert moved("llm_edge_request_duration_ms_count", provider="openai", model="gpt-4o", cache="miss") == 1
    assert moved("llm_edge_request_duration_ms_count", **mini, cache="hit-l1") == 1
    assert sample(front_after, "llm_edge_active_requests") == 0

    def worker_moved(name: str, **labels: str) -> float:
        return sample(worker_after, name, **labels) - sample(worker_before, name, **labels)

    # The hit never reached a worker: two jobs, one answered 200 and one 429.
    assert worker_moved("llm_edge_worker_jobs_total", provider="openai", status="200") == 1
    assert worker_moved("llm_edge_worker_jobs_total", provider="openai", status="429") == 1
    assert worker_moved("llm_edge_upstream_duration_ms_count", provider="openai") == 2
    assert worker_moved("llm_edge_queue_wait_ms_count", provider="openai") == 2
    assert worker_moved("llm_edge_cost_usd_total", provider="openai", model="gpt-4o-mini") > 0
    # Tokens are counted once, by the front.
    assert not any(name == "llm_edge_upstream_tokens_total" for name, _ in worker_after)
