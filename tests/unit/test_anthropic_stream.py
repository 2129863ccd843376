"""AnthropicStreamTranslator: Anthropic Messages streaming events -> OpenAI chat.completion.chunks.

Event sequences follow Anthropic's documented streaming shapes; one is generated with the
anthropic SDK's own event types. Every chunk is validated with the openai SDK's types, and the
chunks are reassembled with the openai SDK's own stream accumulator, as a client would.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
import msgspec
import openai.types.chat
import pytest

# A locked dependency, private module and all: an SDK refactor must fail this test, not skip it.
from anthropic.lib.streaming._messages import accumulate_event
from openai.lib.streaming.chat import ChatCompletionStreamState

from edge_workers.providers.anthropic import to_chat_completion
from edge_workers.providers.anthropic_stream import AnthropicStreamError, AnthropicStreamTranslator
from edge_workers.providers.anthropic_wire import AnthropicMessage
from edge_workers.providers.base import StreamError
from shared.wire import ChatCompletionChunk, PromptTokensDetails, Usage

CREATED = 1_700_000_000
MODEL = "claude-sonnet-4-5-20250929"
Event = tuple[str, bytes]


def ev(data: dict[str, Any]) -> Event:
    return data["type"], json.dumps(data).encode()


def message_start(**usage: int) -> Event:
    counts = {"input_tokens": 25, "output_tokens": 1, **usage}
    message: dict[str, Any] = {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": counts,
    }
    return ev({"type": "message_start", "message": message})


def text_block(index: int, *pieces: str) -> list[Event]:
    start = {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}
    deltas = [
        ev({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}})
        for p in pieces
    ]
    return [ev(start), *deltas, ev({"type": "content_block_stop", "index": index})]


def tool_block(index: int, id_: str, name: str, *fragments: str) -> list[Event]:
    block = {"type": "tool_use", "id": id_, "name": name, "input": {}}
    deltas = [
        ev(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f},
            }
        )
        for f in fragments
    ]
    start = {"type": "content_block_start", "index": index, "content_block": block}
    return [ev(start), *deltas, ev({"type": "content_block_stop", "index": index})]


def finish(stop_reason: str, **usage: int) -> list[Event]:
    delta = {"stop_reason": stop_reason, "stop_sequence": None}
    return [
        ev({"type": "message_delta", "delta": delta, "usage": {"output_tokens": 15, **usage}}),
        ev({"type": "message_stop"}),
    ]


PING = ev({"type": "ping"})


def run(
    events: list[Event], translator: AnthropicStreamTranslator | None = None
) -> list[ChatCompletionChunk]:
    t = translator or AnthropicStreamTranslator(CREATED)
    chunks = [chunk for name, data in events for chunk in t.feed(name, data)]
    for chunk in chunks:
        openai.types.chat.ChatCompletionChunk.model_validate_json(msgspec.json.encode(chunk))
    return chunks


def content(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def arguments(chunks: list[ChatCompletionChunk], index: int) -> str:
    return "".join(
        call.function.arguments or ""
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
        if call.index == index and call.function is not None
    )


def finish_reasons(chunks: list[ChatCompletionChunk]) -> list[str]:
    return [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]


def client_calls(completion: openai.types.chat.ChatCompletion) -> list[tuple[str, str, Any]]:
    """(id, name, decoded arguments) of the function calls a client reassembled."""
    calls = []
    for call in completion.choices[0].message.tool_calls or []:
        assert isinstance(call, openai.types.chat.ChatCompletionMessageFunctionToolCall)
        calls.append((call.id, call.function.name, json.loads(call.function.arguments)))
    return calls


def reassemble(chunks: list[ChatCompletionChunk]) -> openai.types.chat.ChatCompletion:
    """What the openai SDK makes of the stream, as a client with stream_options.include_usage."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(
            openai.types.chat.ChatCompletionChunk.model_validate_json(msgspec.json.encode(chunk))
        )
    return state.get_final_completion()


# ---- text -----------------------------------------------------------------------------------


def test_text_only() -> None:
    pieces = ["Hello", "! How", " can I ", "help you today?"]
    t = AnthropicStreamTranslator(CREATED)
    events = [
        message_start(),
        *text_block(0, *pieces)[:1],
        PING,
        *text_block(0, *pieces)[1:],
        *finish("end_turn"),
    ]
    chunks = run(events, t)

    first = chunks[0]
    assert first.id == "chatcmpl-msg_01XFDUDYJgAACzvnptvVoYEL" and first.model == MODEL
    assert first.created == CREATED and first.object == "chat.completion.chunk"
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert all(c.id == first.id and c.model == MODEL and c.created == CREATED for c in chunks)
    assert len(chunks) == 1 + len(pieces) + 2  # role, one per text delta, finish, usage
    assert content(chunks) == "".join(pieces)
    assert finish_reasons(chunks) == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage == Usage(prompt_tokens=25, completion_tokens=15, total_tokens=40)
    assert all(c.usage is None for c in chunks[:-1])
    assert t.finished and t.usage == last.usage

    final = reassemble(chunks)
    assert final.choices[0].message.content == "".join(pieces)
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.total_tokens == 40


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop_reason: str, finish_reason: str) -> None:
    chunks = run([message_start(), *text_block(0, "Once upon a"), *finish(stop_reason)])
    assert finish_reasons(chunks) == [finish_reason]
    delta_chunk = chunks[-2]
    assert delta_chunk.choices[0].delta == type(delta_chunk.choices[0].delta)()  # empty delta
    assert msgspec.json.decode(msgspec.json.encode(delta_chunk))["choices"][0]["delta"] == {}


def test_not_finished_before_message_stop() -> None:
    t = AnthropicStreamTranslator(CREATED)
    run([message_start(), *text_block(0, "Hi"), finish("end_turn")[0]], t)
    assert not t.finished
    assert t.usage == Usage(prompt_tokens=25, completion_tokens=15, total_tokens=40)
    assert AnthropicStreamTranslator(CREATED).usage is None


# ---- tools ----------------------------------------------------------------------------------


def test_text_then_tool_use() -> None:
    fragments = ['{"loc', 'ation": "San Fra', "", 'ncisco, CA", "unit": "fah', 'renheit"}']
    events = [
        message_start(),
        *text_block(0, "Okay, let me check ", "the weather."),
        *tool_block(1, "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", *fragments),
        *finish("tool_use"),
    ]
    chunks = run(events)
    assert content(chunks) == "Okay, let me check the weather."
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    head = calls[0]
    assert head.index == 0 and head.id == "toolu_01T1x1fJ34qAmk2tNTrN7Up6" and head.type == "function"
    assert head.function is not None and head.function.name == "get_weather" and head.function.arguments == ""
    # Empty fragments are skipped; the others follow with index only.
    assert len(calls) == 1 + 4
    assert all(c.id is None and c.type is None and c.function and c.function.name is None for c in calls[1:])
    assert json.loads(arguments(chunks, 0)) == {"location": "San Francisco, CA", "unit": "fahrenheit"}
    assert finish_reasons(chunks) == ["tool_calls"]

    final = reassemble(chunks)
    assert final.choices[0].finish_reason == "tool_calls"
    assert client_calls(final) == [
        (
            "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
            "get_weather",
            {"location": "San Francisco, CA", "unit": "fahrenheit"},
        )
    ]


def test_two_tool_uses_are_numbered_among_tool_calls_only() -> None:
    events = [
        message_start(),
        *text_block(0, "Checking both."),
        *tool_block(1, "toolu_a", "get_weather", '{"city":', ' "Paris"}'),
        *tool_block(2, "toolu_b", "get_time", '{"tz": "Europe/', 'Paris"}'),
        *finish("tool_use"),
    ]
    chunks = run(events)
    heads = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or [] if call.id]
    assert [(h.index, h.id) for h in heads] == [(0, "toolu_a"), (1, "toolu_b")]
    assert json.loads(arguments(chunks, 0)) == {"city": "Paris"}
    assert json.loads(arguments(chunks, 1)) == {"tz": "Europe/Paris"}
    assert [name for _, name, _ in client_calls(reassemble(chunks))] == ["get_weather", "get_time"]


def test_tool_use_without_arguments_gets_an_empty_object() -> None:
    chunks = run([message_start(), *tool_block(0, "toolu_x", "now", ""), *finish("tool_use")])
    assert arguments(chunks, 0) == "{}"


# ---- blocks OpenAI has no field for ----------------------------------------------------------


def test_thinking_and_server_tool_blocks_are_ignored() -> None:
    def delta(index: int, **d: Any) -> Event:
        return ev({"type": "content_block_delta", "index": index, "delta": d})

    def start(index: int, **block: Any) -> Event:
        return ev({"type": "content_block_start", "index": index, "content_block": block})

    def stop(index: int) -> Event:
        return ev({"type": "content_block_stop", "index": index})

    citation = {"type": "web_search_result_location", "url": "https://x", "title": "X", "cited_text": "..."}
    events = [
        message_start(),
        start(0, type="thinking", thinking="", signature=""),
        delta(0, type="thinking_delta", thinking="Let me think"),
        delta(0, type="signature_delta", signature="EqQBCgIYAhIM1gbcDa9GJwZA2b3h"),
        stop(0),
        start(1, type="redacted_thinking", data="EmwKAhgBEgy3va3pzix"),
        stop(1),
        start(2, type="server_tool_use", id="srvtoolu_1", name="web_search", input={}),
        delta(2, type="input_json_delta", partial_json='{"query": "weather"}'),
        stop(2),
        start(3, type="web_search_tool_result", tool_use_id="srvtoolu_1", content=[]),
        stop(3),
        *text_block(4, "It is sunny."),
        delta(4, type="citations_delta", citation=citation),
        ev({"type": "some_future_event", "whatever": [1, 2]}),
        ("some_future_event", b"not even json"),
        *finish("end_turn"),
    ]
    chunks = run(events)
    assert content(chunks) == "It is sunny."
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert len(chunks) == 1 + 1 + 2
    assert finish_reasons(chunks) == ["stop"]


# ---- structured output (response_format -> forced tool) ---------------------------------------


def test_json_schema_tool_streams_as_content() -> None:
    fragments = ['{"name": "Al', 'ice", "age"', ": 30}"]
    events = [
        message_start(),
        *tool_block(0, "toolu_r", "response_format__person", *fragments),
        *finish("tool_use"),
    ]
    chunks = run(events)
    assert not any(c.choices[0].delta.tool_calls for c in chunks if c.choices)
    assert json.loads(content(chunks)) == {"name": "Alice", "age": 30}
    assert finish_reasons(chunks) == ["stop"]
    final = reassemble(chunks).choices[0]
    assert final.message.tool_calls is None and final.finish_reason == "stop"


def test_json_schema_tool_next_to_a_real_tool_call() -> None:
    events = [
        message_start(),
        *tool_block(0, "toolu_r", "response_format__json_object", '{"ok": true}'),
        *tool_block(1, "toolu_b", "lookup", '{"q": "x"}'),
        *text_block(2, "prose after the structured answer is dropped"),
        *finish("tool_use"),
    ]
    chunks = run(events)
    assert content(chunks) == '{"ok": true}'
    heads = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or [] if call.id]
    assert [(h.index, h.id) for h in heads] == [(0, "toolu_b")]
    assert finish_reasons(chunks) == ["tool_calls"]


# ---- usage -----------------------------------------------------------------------------------


def test_usage_counts_cache_tokens_in_the_prompt() -> None:
    t = AnthropicStreamTranslator(CREATED)
    start = message_start(input_tokens=10, cache_creation_input_tokens=5, cache_read_input_tokens=100)
    chunks = run([start, *text_block(0, "Hi"), *finish("end_turn", output_tokens=42)], t)
    details = PromptTokensDetails(cached_tokens=100, cache_write_tokens=5)
    expected = Usage(prompt_tokens=115, completion_tokens=42, total_tokens=157, prompt_tokens_details=details)
    assert chunks[-1].usage == expected and t.usage == expected


def test_message_delta_usage_is_cumulative_and_overrides() -> None:
    # With server tools, message_delta restates input counts; absent ones keep message_start's.
    start = message_start(input_tokens=10, cache_read_input_tokens=100)
    chunks = run([start, *text_block(0, "Hi"), *finish("end_turn", input_tokens=2000, output_tokens=7)])
    details = PromptTokensDetails(cached_tokens=100)
    assert chunks[-1].usage == Usage(2100, 7, 2107, prompt_tokens_details=details)


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "status", "type_", "code"),
    [
        ("overloaded_error", 529, "server_error", "overloaded"),
        ("api_error", 500, "server_error", None),
        ("rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
        ("invalid_request_error", 400, "invalid_request_error", None),
        ("something_new_error", 500, "server_error", "something_new_error"),
    ],
)
def test_error_event(error_type: str, status: int, type_: str, code: str | None) -> None:
    t = AnthropicStreamTranslator(CREATED)
    run([message_start(), *text_block(0, "Hel")[:2]], t)
    error = ev({"type": "error", "error": {"type": error_type, "message": "Overloaded"}})
    with pytest.raises(AnthropicStreamError) as info:
        t.feed(*error)
    assert isinstance(info.value, StreamError)
    assert info.value.status == status
    assert info.value.detail.type == type_ and info.value.detail.code == code
    assert info.value.detail.message == "Overloaded"
    assert not t.finished


@pytest.mark.parametrize(
    "event",
    [
        ("content_block_delta", b'{"type": "content_block_delta", "index": 0, "delta": {"type": "text_'),
        ("", b"{not json"),
        ("message_start", b'{"type": "message_start", "message": {"id": 42}}'),
        ("error", b'{"type": "error"}'),
    ],
)
def test_malformed_event_is_a_502(event: Event) -> None:
    with pytest.raises(AnthropicStreamError) as info:
        AnthropicStreamTranslator(CREATED).feed(*event)
    assert info.value.status == 502 and info.value.detail.type == "upstream_error"


def test_event_name_may_be_absent() -> None:
    events = [
        ("", data) for _, data in [message_start(), *text_block(0, "a", "b"), PING, *finish("end_turn")]
    ]
    t = AnthropicStreamTranslator(CREATED)
    chunks = run(events, t)
    assert content(chunks) == "ab" and finish_reasons(chunks) == ["stop"] and t.finished


# ---- against the anthropic SDK ----------------------------------------------------------------


def test_sdk_built_stream_matches_the_non_streaming_translation() -> None:
    """Events built with the anthropic SDK's types; the SDK's own accumulator rebuilds the message,
    whose non-streaming translation must say what the reassembled stream says."""
    t_ = anthropic.types

    usage = t_.Usage(input_tokens=30, output_tokens=1, cache_read_input_tokens=12)
    message = t_.Message(id="msg_sdk", type="message", role="assistant", model=MODEL, content=[], usage=usage)
    weather = t_.ToolUseBlock(type="tool_use", id="toolu_sdk", name="get_weather", input={})

    def delta(index: int, d: Any) -> Any:
        return t_.RawContentBlockDeltaEvent(type="content_block_delta", index=index, delta=d)

    events: list[Any] = [
        t_.RawMessageStartEvent(type="message_start", message=message),
        t_.RawContentBlockStartEvent(
            type="content_block_start", index=0, content_block=t_.TextBlock(type="text", text="")
        ),
        delta(0, t_.TextDelta(type="text_delta", text="Let me ")),
        delta(0, t_.TextDelta(type="text_delta", text="look.")),
        t_.RawContentBlockStopEvent(type="content_block_stop", index=0),
        t_.RawContentBlockStartEvent(type="content_block_start", index=1, content_block=weather),
        delta(1, t_.InputJSONDelta(type="input_json_delta", partial_json='{"city": "Os')),
        delta(1, t_.InputJSONDelta(type="input_json_delta", partial_json='lo", "days": [1, 2]}')),
        t_.RawContentBlockStopEvent(type="content_block_stop", index=1),
        t_.RawMessageDeltaEvent(
            type="message_delta",
            delta={"stop_reason": "tool_use", "stop_sequence": None},
            usage=t_.MessageDeltaUsage(output_tokens=20),
        ),
        t_.RawMessageStopEvent(type="message_stop"),
    ]
    t = AnthropicStreamTranslator(CREATED)
    chunks = run([(e.type, e.model_dump_json().encode()) for e in events], t)

    snapshot, json_bufs = None, dict[int, bytes]()
    for e in events:
        snapshot = accumulate_event(event=e, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    expected = to_chat_completion(
        msgspec.json.decode(snapshot.model_dump_json(), type=AnthropicMessage), CREATED
    )

    got = reassemble(chunks)
    want = expected.choices[0]
    assert got.id == expected.id and got.model == expected.model
    assert got.choices[0].message.content == want.message.content == "Let me look."
    assert got.choices[0].finish_reason == want.finish_reason == "tool_calls"
    assert client_calls(got) == [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in want.message.tool_calls or []
    ]
    assert client_calls(got) == [("toolu_sdk", "get_weather", {"city": "Oslo", "days": [1, 2]})]
    cached = PromptTokensDetails(cached_tokens=12)
    assert t.usage == expected.usage == Usage(42, 20, 62, prompt_tokens_details=cached)
