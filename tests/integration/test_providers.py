"""Gemini, Azure OpenAI and OpenAI-compatible quirks end to end: the openai SDK as client, a real
front, one worker pool per provider, the fake upstream speaking each wire format."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from tests.integration.conftest import sample, scrape

CONFIG = """\
model_list:
  - {model_name: gem, provider: gemini, model: gemini-2.5-flash}
  - {model_name: az, provider: azure, model: my-gpt4o, api_version: "2024-10-21"}
  - {model_name: az-v1, provider: azure, model: my-gpt4o, api_version: v1, auth: bearer}
  - {model_name: gem-busy, provider: gemini, model: gemini-2.5-pro, base_url: "BUSY_URL/v1beta"}
  - {model_name: quirky, provider: openai, model: small-llm, stream_options: false,
     max_tokens_field: max_tokens, input_cost_per_1m: 1000, output_cost_per_1m: 1000}
  - {model_name: plain-compat, provider: openai, model: small-llm}
router_settings:
  fallbacks: {gem-busy: [az]}
  retry: {max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 200}
"""


@pytest.fixture(scope="module")
def front(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Front]:
    logs = Path(tmp_path_factory.mktemp("providers"))
    dev = DevStack(log_dir=logs)
    try:
        dev.start_redis()
        dev.start_upstream()
        busy = dev.spawn_upstream("--error-rate", "1", "--error-status", "429")  # always RESOURCE_EXHAUSTED
        config = logs / "models.yaml"
        config.write_text(CONFIG.replace("BUSY_URL", busy))
        dev.env_overrides["EDGE_CONFIG"] = str(config)
        for provider in ("gemini", "azure", "openai"):
            dev.start_worker(provider)
        dev.workers_by_provider = {w.provider: w for w in dev.workers}  # type: ignore[attr-defined]
        front = dev.start_front()
        front.dev = dev  # type: ignore[attr-defined]
        yield front
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def client(front: Front) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


def ask(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:8]}"}]


@pytest.mark.parametrize("model", ["gem", "az", "az-v1"])
def test_plain_answer_then_cache_hit(client: openai.OpenAI, model: str) -> None:
    messages = ask("hello [[fake:words=7]]")
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    provider = "gemini" if model == "gem" else "azure"
    assert raw.headers["x-edge-provider"] == provider and raw.headers["x-edge-cache"] == "miss"
    answer = raw.parse()
    assert answer.choices[0].message.content and len(answer.choices[0].message.content.split()) == 7
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage and answer.usage.completion_tokens == 7 and answer.usage.prompt_tokens > 0
    again = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert again.headers["x-edge-cache"].startswith("hit")
    assert again.parse().choices[0].message.content == answer.choices[0].message.content


@pytest.mark.parametrize("model", ["gem", "az"])
def test_streamed_answer_with_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model,
        messages=ask("stream [[fake:words=9]]"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len(text.split()) == 9
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 9
    assert all(c.id for c in chunks)  # Azure's prompt-filter chunk (no id) never reaches clients


def test_gemini_tools_round_trip_and_structured_output(client: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[Any] = ask("weather in Paris?")
    first = client.chat.completions.create(model="gem", messages=messages, tools=tools)  # type: ignore[arg-type]
    call = first.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21C"},
    ]
    second = client.chat.completions.create(model="gem", messages=messages, tools=tools)  # type: ignore[arg-type]
    assert second.choices[0].message.content and second.choices[0].finish_reason == "stop"
    streamed = list(
        client.chat.completions.create(model="gem", messages=ask("weather?"), tools=tools, stream=True)
    )  # type: ignore[arg-type]
    deltas = [c.choices[0].delta.tool_calls for c in streamed if c.choices and c.choices[0].delta.tool_calls]
    assert deltas and deltas[0][0].function.name == "get_weather"  # type: ignore[union-attr]

    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer"}},
        "required": ["n"],
        "additionalProperties": False,
    }
    structured = client.chat.completions.create(
        model="gem",
        messages=ask("a number"),
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "num", "schema": schema, "strict": True},
        },
    )
    assert isinstance(json.loads(structured.choices[0].message.content or "")["n"], int)


def test_errors_map_to_openai_envelopes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=ask("[[fake:blocked=prompt]]"))
    assert info.value.code == "content_filter"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="az", messages=ask("[[fake:blocked=prompt]]"))
    assert info.value.code == "content_filter"
    blocked = client.chat.completions.create(model="gem", messages=ask("[[fake:blocked=answer]]"))
    assert blocked.choices[0].finish_reason == "content_filter"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gem", messages=ask("[[fake:status=400]]"))
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="gem",
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/x.png"}}],
                }
            ],
        )
    assert "does not fetch" in info.value.message
    with pytest.raises(openai.APIError):  # mid-stream failure arrives as an error event
        list(
            client.chat.completions.create(
                model="gem", messages=ask("[[fake:stream_error_after=2]]"), stream=True
            )
        )


def test_a_429_is_retried_and_a_busy_deployment_falls_back(client: openai.OpenAI) -> None:
    for model in ("gem", "az"):
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=ask("[[fake:status=429]] [[fake:times=1]] [[fake:retry_after=0.05]]")
        )
        assert raw.headers["x-edge-attempts"] == "2" and raw.headers["x-edge-provider"] in ("gemini", "azure")
    fell = client.chat.completions.with_raw_response.create(model="gem-busy", messages=ask("hi"))
    assert fell.headers["x-edge-provider"] == "azure" and fell.headers["x-edge-model"] == "my-gpt4o"


def test_compat_switches_keep_refused_fields_out_and_usage_is_estimated(client: openai.OpenAI) -> None:
    refuse = "[[fake:reject_fields=stream_options,max_completion_tokens]] [[fake:words=12]]"
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="plain-compat", messages=ask(refuse), max_completion_tokens=50)
    answer = client.chat.completions.create(model="quirky", messages=ask(refuse), max_completion_tokens=50)
    assert answer.usage and answer.usage.completion_tokens == 12  # the server's own count
    chunks = list(
        client.chat.completions.create(
            model="quirky",
            messages=ask(refuse),
            max_completion_tokens=50,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == -(-len(text) // 4)  # estimated: ~4 chars a token
    assert usage.prompt_tokens > 0
    # A whole answer without usage: the client gets it as sent, costs use the estimate.
    raw = client.chat.completions.with_raw_response.create(model="quirky", messages=ask("[[fake:no_usage]]"))
    assert raw.parse().usage is None and float(raw.headers["x-edge-cost-usd"]) > 0


def test_health_and_metrics_name_each_provider(front: Front, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gem", messages=ask("count me"))
    providers = httpx.get(f"{front.url}/health", timeout=10).json()["providers"]
    assert providers["gemini"]["worker_alive"] and providers["azure"]["worker_alive"]
    worker = front.dev.workers_by_provider["gemini"]  # type: ignore[attr-defined]
    samples = scrape(f"http://127.0.0.1:{worker.metrics_port}/metrics")
    assert sample(samples, "llm_edge_worker_jobs_total", provider="gemini", status="200") >= 1
    front_samples = scrape(f"{front.url}/metrics")
    assert sample(front_samples, "llm_edge_requests_total", provider="gemini", model="gem", status="200") >= 1
