"""Anthropic's Messages API through the gateway, with the official `anthropic` SDK as the client,
against real front and worker processes: to an Anthropic upstream (passed through: the fake
upstream's Anthropic API) and to an OpenAI-shaped one (translated: the fake's OpenAI API)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from tests.integration.conftest import fake_stats, sdk

CLAUDE, GPT = "claude-3-5-haiku-latest", "gpt-4o-mini"
MODELS = [CLAUDE, GPT]
# What each model's requests reach upstream: passed through, or translated to chat completions.
UPSTREAM_PATH = {CLAUDE: "/v1/messages", GPT: "/v1/chat/completions"}
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(scope="module")
def claude_sdk(front: Front) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=front.url, api_key=MASTER_KEY, max_retries=0)


def unique(text: str) -> list[Any]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex[:8]}"}]


def upstream_calls(stack: DevStack, path: str) -> int:
    return int(fake_stats(stack.upstream_url)["by_path"].get(path, 0))


@pytest.mark.parametrize("model", MODELS)
def test_plain_message(claude_sdk: anthropic.Anthropic, stack: DevStack, model: str) -> None:
    before = upstream_calls(stack, UPSTREAM_PATH[model])
    raw = claude_sdk.messages.with_raw_response.create(
        model=model, max_tokens=200, system="Be brief.", messages=unique("Hello there")
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and message.content[0].text.startswith("Re: Hello there")
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-edge-cache"] == "miss" and raw.headers["x-edge-provider"] in ("anthropic", "openai")
    assert float(raw.headers["x-edge-cost-usd"]) >= 0
    assert upstream_calls(stack, UPSTREAM_PATH[model]) == before + 1


@pytest.mark.parametrize("model", MODELS)
def test_stream_helper(claude_sdk: anthropic.Anthropic, model: str) -> None:
    kinds: list[str] = []
    with claude_sdk.messages.stream(
        model=model, max_tokens=200, messages=unique("[[fake:words=12]] stream this")
    ) as stream:
        for event in stream:
            kinds.append(event.type)
        final = stream.get_final_message()
    text = final.content[0]
    assert text.type == "text" and len(text.text.split()) == 12
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert kinds.count("text") >= 2  # the SDK's text events: one per delta, so not one buffered blob
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", MODELS)
def test_tool_use_and_tool_result_round_trip(claude_sdk: anthropic.Anthropic, model: str) -> None:
    asked = unique("What is the weather in Oslo?")
    first = claude_sdk.messages.create(model=model, max_tokens=300, tools=[WEATHER], messages=asked)
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather" and isinstance(call.input, dict)
    assert "city" in call.input
    answer = [{"type": "tool_result", "tool_use_id": call.id, "content": "-3 C and snowing"}]
    second = claude_sdk.messages.create(
        model=model,
        max_tokens=300,
        tools=[WEATHER],
        messages=[
            *asked,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": answer},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"

    # Streamed, the call's input arrives as input_json_delta events and is reassembled by the SDK.
    with claude_sdk.messages.stream(
        model=model, max_tokens=300, tools=[WEATHER], messages=unique("Weather in Rome?")
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in deltas
    assert final.stop_reason == "tool_use" and final.content[-1].type == "tool_use"
    assert "city" in final.content[-1].input


def test_count_tokens(claude_sdk: anthropic.Anthropic, stack: DevStack) -> None:
    messages = [{"role": "user", "content": f"count these five words {uuid.uuid4().hex[:8]}"}]
    before = upstream_calls(stack, "/v1/messages/count_tokens")
    counted = claude_sdk.messages.count_tokens(model=CLAUDE, system="Be brief.", messages=messages)
    assert counted.input_tokens == 2 + 5 + 3  # the fake's count: words, and 3 per message
    assert upstream_calls(stack, "/v1/messages/count_tokens") == before + 1
    # An OpenAI model has no count endpoint: the front counts with tiktoken, asking nobody.
    before_chat = upstream_calls(stack, "/v1/chat/completions")
    local = claude_sdk.messages.count_tokens(model=GPT, system="Be brief.", messages=messages)
    longer = claude_sdk.messages.count_tokens(model=GPT, messages=[*messages, *unique("more " * 40)])
    assert 0 < local.input_tokens < longer.input_tokens
    assert upstream_calls(stack, "/v1/chat/completions") == before_chat


@pytest.mark.parametrize("model", MODELS)
def test_repeat_is_a_cache_hit_apart_from_chat(
    claude_sdk: anthropic.Anthropic, front: Front, model: str
) -> None:
    messages = unique("Cache me")
    first = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=100, messages=messages)
    again = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=100, messages=messages)
    assert (first.headers["x-edge-cache"], again.headers["x-edge-cache"]) == ("miss", "hit-l1")
    assert again.parse() == first.parse()
    # Streamed, the cached message replays as the same message.
    with claude_sdk.messages.stream(model=model, max_tokens=100, messages=messages) as stream:
        assert stream.response.headers["x-edge-cache"] == "hit-l1"
        replayed = stream.get_final_message().model_dump(exclude_none=True)
    cached = first.parse().model_dump(exclude_none=True)
    for block in replayed["content"]:
        block.pop("parsed_output", None)  # the stream helper's own addition
    assert replayed == cached
    # The same content asked as a chat completion is another entry, in its own shape.
    chat = sdk(front).chat.completions.with_raw_response.create(
        model=model, max_tokens=100, messages=messages
    )
    assert chat.headers["x-edge-cache"] == "miss" and chat.parse().object == "chat.completion"


def test_passthrough_forwards_anthropic_beta_and_not_the_clients_key(
    claude_sdk: anthropic.Anthropic, stack: DevStack
) -> None:
    message = claude_sdk.beta.messages.create(  # POST /v1/messages?beta=true, as Claude Code does
        model=CLAUDE,
        max_tokens=50,
        messages=unique("beta please"),
        betas=["interleaved-thinking-2025-05-14"],
        extra_headers={
            "anthropic-version": "2023-06-01",
            "anthropic-dangerous-direct-browser-access": "true",
        },
    )
    assert message.content[0].type == "text"
    seen = {k.lower(): v for k, v in fake_stats(stack.upstream_url)["last_headers"]["/v1/messages"].items()}
    assert seen["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert seen["anthropic-version"] == "2023-06-01"  # the client's, as sent
    assert seen["x-api-key"] == "sk-upstream-anthropic"  # the worker's key, never the client's
    assert "authorization" not in seen and "anthropic-dangerous-direct-browser-access" not in seen
    assert MASTER_KEY not in str(seen)


def test_x_api_key_is_accepted_too(front: Front) -> None:
    body = {"model": CLAUDE, "max_tokens": 20, "messages": unique("by x-api-key")}
    answer = httpx.post(
        f"{front.url}/v1/messages",
        json=body,
        headers={"x-api-key": MASTER_KEY, "anthropic-version": "2023-06-01"},
    )
    assert answer.status_code == 200 and answer.json()["type"] == "message"


def error_of(raised: pytest.ExceptionInfo[anthropic.APIStatusError]) -> dict[str, Any]:
    body = raised.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    return dict(body["error"])


@pytest.mark.parametrize("model", MODELS)
def test_errors_are_the_sdks_exceptions(claude_sdk: anthropic.Anthropic, front: Front, model: str) -> None:
    with pytest.raises(anthropic.NotFoundError) as not_found:
        claude_sdk.messages.create(model="no-such-model", max_tokens=10, messages=unique("x"))
    assert error_of(not_found)["type"] == "not_found_error"
    stranger = anthropic.Anthropic(base_url=front.url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as unauthenticated:
        stranger.messages.create(model=model, max_tokens=10, messages=unique("x"))
    assert error_of(unauthenticated)["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude_sdk.messages.create(model=model, max_tokens=0, messages=unique("x"))
    assert error_of(bad)["type"] == "invalid_request_error" and "max_tokens" in error_of(bad)["message"]
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude_sdk.messages.create(model=model, max_tokens=10, messages=unique("[[fake:status=429]]"))
    assert error_of(limited)["type"] == "rate_limit_error"
    with pytest.raises(anthropic.InternalServerError) as failed:
        claude_sdk.messages.create(model=model, max_tokens=10, messages=unique("[[fake:status=500]]"))
    assert failed.value.status_code == 502 and error_of(failed)["type"] == "api_error"


def test_what_an_openai_model_cannot_honour_is_a_bad_request(claude_sdk: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        claude_sdk.messages.create(model=GPT, max_tokens=10, extra_body={"top_k": 5}, messages=unique("x"))
    assert "top_k" in error_of(raised)["message"]
    # Anthropic itself takes it: passed through.
    assert claude_sdk.messages.create(
        model=CLAUDE, max_tokens=10, extra_body={"top_k": 5}, messages=unique("x")
    ).content


@pytest.mark.parametrize("model", MODELS)
def test_failure_inside_a_started_stream_is_an_error_event(
    claude_sdk: anthropic.Anthropic, model: str
) -> None:
    received = []
    with pytest.raises(anthropic.APIStatusError) as raised:
        with claude_sdk.messages.stream(
            model=model, max_tokens=200, messages=unique("[[fake:stream_error_after=3]]")
        ) as stream:
            for event in stream:
                received.append(event.type)
    assert "message_start" in received  # it came inside the stream, not as an HTTP status
    assert isinstance(raised.value.body, dict) and raised.value.body["type"] == "error"


def test_virtual_key_limits_and_models_apply(front: Front) -> None:
    made = httpx.post(
        f"{front.url}/key/generate",
        json={"models": ["claude-*"], "tpm_limit": 1_000_000, "max_budget": 100, "rpm_limit": 1000},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    ).json()
    client = anthropic.Anthropic(base_url=front.url, api_key=made["key"], max_retries=0)
    message = client.messages.create(model=CLAUDE, max_tokens=50, messages=unique("as a virtual key"))
    assert message.content[0].type == "text"
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        client.messages.create(model=GPT, max_tokens=50, messages=unique("not this model"))
    assert error_of(refused)["type"] == "permission_error"
    info = httpx.get(
        f"{front.url}/key/info",
        params={"key": made["key_id"]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()["info"]
    assert info["requests"] == 1 and info["prompt_tokens"] > 0  # booked like a chat completion


def test_chat_clients_are_unchanged(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=CLAUDE, messages=unique("still OpenAI-shaped"))
    assert answer.object == "chat.completion" and answer.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_identical_concurrent_messages_share_one_upstream_call(
    claude_sdk: anthropic.Anthropic, stack: DevStack, model: str
) -> None:
    messages = unique("[[fake:delay_ms=400]] together")
    before = upstream_calls(stack, UPSTREAM_PATH[model])

    def ask(_: int) -> tuple[str, str]:
        raw = claude_sdk.messages.with_raw_response.create(model=model, max_tokens=50, messages=messages)
        return raw.headers["x-edge-cache"], raw.parse().content[0].text  # type: ignore[union-attr]

    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(ask, range(4)))
    assert len({text for _, text in answers}) == 1
    assert sorted(tier for tier, _ in answers).count("miss") == 1
    assert upstream_calls(stack, UPSTREAM_PATH[model]) == before + 1
