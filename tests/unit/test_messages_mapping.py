"""Anthropic Messages clients in front of OpenAI-shaped upstreams: the request translation, the
answer and stream translations, the passthrough accumulator and the cache replay.

Streams are checked as the anthropic SDK reads them: every event is validated with its types
and accumulated with its own accumulator. The request translation is checked against the
outbound mapping it reverses: Anthropic -> OpenAI -> Anthropic gives the request back.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic.types as at
import msgspec
import pydantic
import pytest

# A locked dependency, private module and all: an SDK refactor must fail this test, not skip it.
from anthropic.lib.streaming._messages import accumulate_event

from edge_workers.messages import MessagesPassthrough, MessagesViaChat, shape_of
from edge_workers.messages_stream import AnthropicEvents, ChatToEvents, to_anthropic_message
from edge_workers.providers import ADAPTERS
from edge_workers.providers.anthropic_request import to_messages_request
from edge_workers.providers.anthropic_stream import AnthropicStreamError
from edge_workers.providers.openai import OpenAIStreamTranslator
from shared import anthropic_api
from shared.anthropic_api import anthropic_error_body, error_type_of, map_stop_reason, stop_reason_of
from shared.anthropic_events import replay_events
from shared.anthropic_to_chat import chat_view, to_chat_request
from shared.cache_keys import cache_key, chat_cache_key
from shared.config import Deployment
from shared.errors import EdgeError, error_body
from shared.queue import Job
from shared.sse import SSEParser
from shared.wire import (
    ChatCompletion,
    Choice,
    FunctionCall,
    PromptTokensDetails,
    ResponseMessage,
    ToolCall,
    Usage,
)

_events = pydantic.TypeAdapter(at.RawMessageStreamEvent)
WEATHER = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def sdk_message(frames: bytes) -> at.Message:
    """What the anthropic SDK's stream helper makes of these SSE frames (every event validated)."""
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    parser = SSEParser()
    names = []
    for name, data in parser.feed_bytes(frames):
        event = _events.validate_json(data) if name != "ping" else None
        names.append(name)
        if event is not None:
            assert event.type == name
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert snapshot is not None
    return at.Message.model_validate(snapshot.model_dump())


# ---- the tables, both ways ------------------------------------------------------------------


def test_stop_reasons_read_back() -> None:
    for anthropic_reason, _ in anthropic_api.STOP_REASONS:
        finish = map_stop_reason(anthropic_reason)
        assert map_stop_reason(stop_reason_of(finish)) == finish
    assert [stop_reason_of(f) for f in ("stop", "length", "tool_calls", "content_filter", None)] == [
        "end_turn",
        "max_tokens",
        "tool_use",
        "refusal",
        "end_turn",
    ]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (422, "invalid_request_error"),
    ],
)
def test_error_envelope_per_status(status: int, kind: str) -> None:
    body = json.loads(anthropic_error_body(status, error_body(status, "what went wrong")))
    assert body == {"type": "error", "error": {"type": kind, "message": "what went wrong"}}
    assert error_type_of(status) == kind


# ---- request: Anthropic -> OpenAI ----------------------------------------------------------


def full_request() -> dict[str, Any]:
    return {
        "model": "m",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "tools": [WEATHER],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Looking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And this picture?"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_1",
                        "content": [{"type": "text", "text": "-3C"}],
                    },
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    },
                ],
            },
        ],
    }


def test_request_translation() -> None:
    chat = to_chat_request(full_request())
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Looking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "-3C"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this picture?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
            ],
        },
    ]
    assert (chat["max_tokens"], chat["temperature"], chat["top_p"], chat["stop"], chat["user"]) == (
        300,
        0.5,
        0.9,
        ["END"],
        "u-1",
    )
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": "Weather of a city",
            },
        }
    ]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False


def test_request_translation_reads_back_through_the_outbound_mapping() -> None:
    """Anthropic -> OpenAI (inbound) -> Anthropic (the existing outbound adapter): the same request,
    but for what OpenAI cannot carry (thinking blocks, cache_control, is_error)."""
    original = full_request()
    back = msgspec.to_builtins(to_messages_request(to_chat_request(original), "m"))
    assert back["system"] == "Be brief."
    assert back["tools"] == [WEATHER]
    assert back["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert (back["max_tokens"], back["temperature"], back["top_p"], back["stop_sequences"]) == (
        300,
        0.5,
        0.9,
        ["END"],
    )
    assert back["metadata"] == {"user_id": "u-1"}
    assert back["messages"][1]["content"] == original["messages"][1]["content"][1:]  # minus thinking
    # Tool results first in the user turn, as Anthropic requires: the original order already.
    assert back["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3C"},
        {"type": "text", "text": "And this picture?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}},
    ]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"top_k": 5}, "top_k"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        (
            {"messages": [{"role": "user", "content": [{"type": "search_result", "source": "x"}]}]},
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image"}]}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_what_an_openai_model_cannot_honour_is_a_400(change: dict[str, Any], param: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **change}
    with pytest.raises(EdgeError) as raised:
        to_chat_request(body)
    assert raised.value.status == 400 and raised.value.param == param
    assert chat_view(body).messages  # the estimate never refuses


def test_tool_choice_and_errors_in_tool_results() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "tools": [WEATHER],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t", "is_error": True, "content": "boom"}],
            }
        ],
    }
    chat = to_chat_request(body)
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["messages"] == [{"role": "tool", "tool_call_id": "t", "content": "Error: boom"}]


# ---- answer: OpenAI -> Anthropic -----------------------------------------------------------


def completion(**message: Any) -> ChatCompletion:
    usage = Usage(120, 30, 150, PromptTokensDetails(cached_tokens=100))
    finish = message.pop("finish", "stop")
    return ChatCompletion("chatcmpl-abc", 1, "gpt-4o", [Choice(0, ResponseMessage(**message), finish)], usage)


def test_answer_translation() -> None:
    call = ToolCall("call_1", FunctionCall("get_weather", '{"city": "Oslo"}'))
    message = at.Message.model_validate(
        to_anthropic_message(completion(content="Sure.", tool_calls=[call], finish="tool_calls"))
    )
    assert message.id == "msg_abc" and message.model == "gpt-4o" and message.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    # OpenAI's prompt_tokens include the cached ones; Anthropic's input_tokens do not.
    assert (
        message.usage.input_tokens,
        message.usage.cache_read_input_tokens,
        message.usage.output_tokens,
    ) == (
        20,
        100,
        30,
    )


def test_refusal_and_length() -> None:
    refused = to_anthropic_message(completion(refusal="I can't.", finish="stop"))
    assert refused["stop_reason"] == "refusal" and refused["content"] == [
        {"type": "text", "text": "I can't."}
    ]
    assert to_anthropic_message(completion(content="cut", finish="length"))["stop_reason"] == "max_tokens"


# ---- streams ------------------------------------------------------------------------------


def chunk(
    delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None
) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body: dict[str, Any] = {
        "id": "chatcmpl-s1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
    }
    body["choices"] = choices
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def openai_stream() -> list[bytes]:
    call = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Let me "}),
        chunk({"content": "check."}),
        chunk({"tool_calls": [call]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Oslo"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage={"prompt_tokens": 40, "completion_tokens": 12, "total_tokens": 52}),
        b"[DONE]",
    ]


def test_openai_stream_becomes_anthropic_events_one_for_one() -> None:
    stream = ChatToEvents(OpenAIStreamTranslator())
    per_chunk = [stream.feed("", data) for data in openai_stream()]
    # Unbuffered: every chunk with content produces its events at once.
    assert all(per_chunk[i] for i in range(1, 6)) and not per_chunk[-1]
    frames = b"".join(body for out in per_chunk for body, usage_only in out if not usage_only)
    message = sdk_message(frames)
    assert message.stop_reason == "tool_use"
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert (message.usage.input_tokens, message.usage.output_tokens) == (40, 12)
    assert stream.finished
    # The cached answer is the message the stream spelled out.
    cached = at.Message.model_validate_json(stream.answer())
    assert cached.content == message.content and cached.stop_reason == message.stop_reason


def test_a_stream_without_usage_chunk_still_ends() -> None:
    stream = ChatToEvents(OpenAIStreamTranslator())
    frames = b"".join(
        body
        for data in (chunk({"role": "assistant", "content": "hi"}), chunk({}, "length"), b"[DONE]")
        for body, _ in stream.feed("", data)
    )
    assert sdk_message(frames).stop_reason == "max_tokens" and stream.finished


def anthropic_frames() -> list[tuple[str, bytes]]:
    usage = {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}
    start = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": []}
    start |= {"stop_reason": None, "stop_sequence": None, "usage": usage}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": start},
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": THINKING},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Hi "}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "there"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {**WEATHER_USE, "input": {}}},
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": '{"ci'},
        },
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": 'ty": "Rome"}'},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    return [(e["type"], json.dumps(e).encode()) for e in events]


THINKING = {"type": "thinking", "thinking": "", "signature": ""}
WEATHER_USE = {"type": "tool_use", "id": "toolu_7", "name": "get_weather", "input": {"city": "Rome"}}


def test_anthropic_stream_passes_through_and_accumulates() -> None:
    stream = AnthropicEvents()
    out = [stream.feed(name, data) for name, data in anthropic_frames()]
    assert all(len(o) == 1 for o in out)  # one event out per event in
    frames = b"".join(body for o in out for body, _ in o)
    assert frames == b"".join(anthropic_api.event_frame(name, data) for name, data in anthropic_frames())
    assert stream.finished
    cached = at.Message.model_validate_json(stream.answer())
    assert cached == sdk_message(frames)
    assert cached.content[2].model_dump(exclude_none=True) == WEATHER_USE
    usage = stream.usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (30, 9)


def test_anthropic_error_event_ends_the_stream() -> None:
    stream = AnthropicEvents()
    stream.feed(*anthropic_frames()[0])
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    with pytest.raises(AnthropicStreamError) as raised:
        stream.feed("error", json.dumps(error).encode())
    assert raised.value.status == 529 and raised.value.detail.message == "Overloaded"
    with pytest.raises(AnthropicStreamError):
        stream.feed("content_block_delta", b"{not json")


def test_cached_message_replays_as_the_same_message() -> None:
    stream = AnthropicEvents()
    for name, data in anthropic_frames():
        stream.feed(name, data)
    original = at.Message.model_validate_json(stream.answer())
    assert sdk_message(replay_events(stream.answer())) == original
    with pytest.raises(ValueError):
        replay_events(b'{"object": "chat.completion"}')


# ---- which adapter serves a job --------------------------------------------------------------


ANTHROPIC_DEP = Deployment("claude", "anthropic", "claude", "https://up", "ANTHROPIC_API_KEY", id="a")
OPENAI_DEP = Deployment("gpt", "openai", "gpt", "https://up/v1", "OPENAI_API_KEY", id="o")


def job(api: str, stream: bool = False, headers: dict[str, str] | None = None) -> Job:
    return Job("j", "r", "reply", "x", "d", "m", b"{}", 0.0, stream=stream, api=api, upstream_headers=headers)


def test_shapes() -> None:
    anthropic_dep, openai_dep = ANTHROPIC_DEP, OPENAI_DEP
    adapter, stream = shape_of(job("messages", True), anthropic_dep)
    assert isinstance(adapter, MessagesPassthrough) and isinstance(stream, AnthropicEvents)
    adapter, stream = shape_of(job("messages", True), openai_dep)
    assert isinstance(adapter, MessagesViaChat) and isinstance(stream, ChatToEvents)
    adapter, stream = shape_of(job("chat"), openai_dep)
    assert adapter is ADAPTERS["openai"] and stream is None


def test_passthrough_forwards_only_allowed_headers_and_the_workers_key() -> None:
    deployment = ANTHROPIC_DEP
    sent = {
        "anthropic-beta": "b1,b2",
        "anthropic-version": "2023-06-01",
        "x-api-key": "client",
        "host": "evil",
    }
    adapter, _ = shape_of(job("messages", headers=sent), deployment)
    body = {"model": "alias", "max_tokens": 5, "messages": [], "some_new_feature": {"x": 1}}
    request = adapter.build_request(body, "claude-real", deployment, "sk-worker", stream=True)
    assert request.url == "https://up/v1/messages"
    assert request.headers == {
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "b1,b2",
        "content-type": "application/json",
        "x-api-key": "sk-worker",
    }
    assert json.loads(request.body) == {**body, "model": "claude-real", "stream": True}
    counted, _ = shape_of(job("count_tokens"), deployment)
    assert counted.build_request(body, "c", deployment, "k").url == "https://up/v1/messages/count_tokens"
    assert counted.parse_response(b'{"input_tokens": 12}') == (b'{"input_tokens": 12}', None)
    with pytest.raises(EdgeError):
        adapter.parse_response(b'{"id": "x"}')


def test_cache_keys_differ_by_api_and_beta_header() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    chat = chat_cache_key(body, "ns")
    messages = cache_key(body, "ns", "messages", {})
    beta = cache_key(body, "ns", "messages", {"anthropic-beta": "x"})
    assert len({chat, messages, beta, cache_key(body, "ns", "count_tokens", {})}) == 4
    assert cache_key({**body, "stream": True, "metadata": {"user_id": "u"}}, "ns", "messages", {}) == messages
