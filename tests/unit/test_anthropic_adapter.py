"""AnthropicAdapter: OpenAI chat completions <-> Anthropic Messages, both ways, plus errors."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai.types.chat
import pydantic
import pytest

from edge_workers.providers.anthropic import AnthropicAdapter, is_response_tool
from edge_workers.providers.anthropic_wire import AnthropicUsage, map_stop_reason, map_usage
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import PromptTokensDetails, Usage

DEP = Deployment(
    model_name="claude",
    provider="anthropic",
    model="claude-sonnet-4-5",
    base_url="https://api.anthropic.com",
    api_key_env="ANTHROPIC_API_KEY",
)
ADAPTER = AnthropicAdapter()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PDF = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4Kc3RyZWFtCg=="


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "claude", "messages": [{"role": "user", "content": "hi"}]}
    body.update(fields)
    return body


def build(**fields: Any) -> dict[str, Any]:
    upstream = ADAPTER.build_request(request(**fields), "claude-sonnet-4-5", DEP, "sk-ant-test")
    payload: dict[str, Any] = json.loads(upstream.body)
    return payload


def rejects(param: str | None, **fields: Any) -> EdgeError:
    with pytest.raises(EdgeError) as info:
        build(**fields)
    assert info.value.status == 400
    assert info.value.param == param
    return info.value


def answer(
    content: list[dict[str, Any]], stop_reason: str | None = "end_turn", **usage: int
) -> dict[str, Any]:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, **usage},
    }


def parse(message: dict[str, Any]) -> tuple[dict[str, Any], Usage | None]:
    body, usage = ADAPTER.parse_response(json.dumps(message).encode())
    openai.types.chat.ChatCompletion.model_validate_json(body)  # what the OpenAI SDK will read
    completion: dict[str, Any] = json.loads(body)
    return completion, usage


# ---- request: envelope ------------------------------------------------------------------


def test_url_headers_model_and_defaults() -> None:
    upstream = ADAPTER.build_request(request(stream=True, seed=7), "claude-sonnet-4-5", DEP, "sk-ant-test")
    assert upstream.url == "https://api.anthropic.com/v1/messages"
    assert upstream.headers == {
        "x-api-key": "sk-ant-test",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    payload = json.loads(upstream.body)
    # Non-streaming adapter: stream is the stream translator's business; seed is ignored.
    assert payload == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 4096,
    }


def test_no_api_key_no_header() -> None:
    assert "x-api-key" not in ADAPTER.build_request(request(), "m", DEP, "").headers


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"max_completion_tokens": 100, "max_tokens": 50}, 100),
        ({"max_tokens": 50}, 50),
        ({}, 4096),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}}, 6096),
        ({"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 3000}, 3000),
    ],
)
def test_max_tokens(fields: dict[str, Any], expected: int) -> None:
    assert build(**fields)["max_tokens"] == expected


def test_sampling_stop_and_user() -> None:
    payload = build(temperature=0.7, top_p=0.9, stop="END", user="user-42")
    assert payload["temperature"] == 0.7
    assert payload["top_p"] == 0.9
    assert payload["stop_sequences"] == ["END"]
    assert payload["metadata"] == {"user_id": "user-42"}
    assert build(stop=["a", "b"])["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in build(stop=[])


def test_native_fields_pass_through() -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    payload = build(top_k=40, thinking=thinking)
    assert payload["top_k"] == 40
    assert payload["thinking"] == thinking


def test_temperature_above_one_is_rejected() -> None:
    assert "between 0 and 1" in rejects("temperature", temperature=1.5).message
    assert build(temperature=1)["temperature"] == 1


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("logit_bias", {"50256": -100}),
        ("functions", [{"name": "f", "parameters": {}}]),
        ("function_call", "auto"),
    ],
)
def test_unsupported_parameters_are_rejected(param: str, value: Any) -> None:
    rejects(param, **{param: value})


def test_neutral_values_of_unsupported_parameters_pass() -> None:
    build(n=1, logprobs=False, top_logprobs=0, presence_penalty=0, frequency_penalty=0.0, logit_bias={})


def test_invalid_body_is_a_400_with_param() -> None:
    rejects("temperature", temperature="hot")


# ---- request: messages ------------------------------------------------------------------


def test_system_and_developer_messages_are_hoisted_wherever_they_are() -> None:
    payload = build(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "assistant", "content": "Salut"},
            {"role": "system", "content": "   "},
        ]
    )
    assert payload["system"] == "Be brief.\n\nUse French."
    assert [m["role"] for m in payload["messages"]] == ["user", "assistant"]
    assert "system" not in build()


def test_only_system_messages_is_rejected() -> None:
    rejects("messages", messages=[{"role": "system", "content": "x"}])


def test_consecutive_same_role_messages_merge() -> None:
    payload = build(
        messages=[
            {"role": "user", "content": "one"},
            {"role": "user", "content": [{"type": "text", "text": "two"}, {"type": "text", "text": " "}]},
            {"role": "assistant", "content": "three"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "four"}, {"type": "refusal", "refusal": "no"}],
            },
            {"role": "user", "content": "five"},
        ]
    )
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "five"}]},
    ]


def test_empty_messages_are_dropped_and_final_prefill_is_right_stripped() -> None:
    payload = build(
        messages=[
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "The answer is "},
        ]
    )
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]


def user_parts(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "look"}, *parts]}]


def test_images() -> None:
    payload = build(
        messages=user_parts(
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        )
    )
    assert payload["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


@pytest.mark.parametrize(
    "url",
    [
        f"data:image/tiff;base64,{PNG}",
        "data:image/png,rawbytes",
        "data:image/png;base64,",
        "ftp://host/cat.png",
    ],
)
def test_bad_images_are_rejected(url: str) -> None:
    rejects("messages[0].content[1]", messages=user_parts({"type": "image_url", "image_url": {"url": url}}))


def test_pdf_file_becomes_a_document() -> None:
    file = {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}
    payload = build(messages=user_parts({"type": "file", "file": file}))
    assert payload["messages"][0]["content"][1] == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
        "title": "a.pdf",
    }


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "file", "file": {"file_data": "data:text/csv;base64,YSxi"}},
    ],
)
def test_audio_and_other_files_are_rejected(part: dict[str, Any]) -> None:
    messages = [{"role": "system", "content": "s"}, *user_parts(part)]
    error = rejects("messages[1].content[1]", messages=messages)
    assert "Anthropic" in error.message or "base64" in error.message


# ---- request: tools ---------------------------------------------------------------------

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CLOCK = {"type": "function", "function": {"name": "now"}}
CLOCK_CALL = {"id": "c0", "type": "function", "function": {"name": "now", "arguments": "{}"}}

TOOL_ROUND_TRIP: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call.2:x",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
            },
            {"id": "call_3", "type": "function", "function": {"name": "now", "arguments": ""}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call.2:x", "content": [{"type": "text", "text": "24C"}]},
    {"role": "tool", "tool_call_id": "call_3", "content": ""},
    {"role": "user", "content": "Thanks, which is warmer?"},
]


def test_tool_round_trip_messages() -> None:
    payload = build(messages=TOOL_ROUND_TRIP, tools=[WEATHER, CLOCK])
    assert payload["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2_x", "name": "get_weather", "input": {"city": "Rome"}},
                {"type": "tool_use", "id": "call_3", "name": "now", "input": {}},
            ],
        },
        {
            # Consecutive tool messages and the next user message: one user turn, results first.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2_x",
                    "content": [{"type": "text", "text": "24C"}],
                },
                {"type": "tool_result", "tool_use_id": "call_3"},
                {"type": "text", "text": "Thanks, which is warmer?"},
            ],
        },
    ]


def test_tool_results_go_first_in_a_user_turn() -> None:
    messages = [
        TOOL_ROUND_TRIP[0],
        {**TOOL_ROUND_TRIP[1], "tool_calls": TOOL_ROUND_TRIP[1]["tool_calls"][:1]},
        {"role": "user", "content": "by the way"},
        TOOL_ROUND_TRIP[2],
    ]
    kinds = [block["type"] for block in build(messages=messages)["messages"][2]["content"]]
    assert kinds == ["tool_result", "text"]


def test_assistant_text_and_tool_calls() -> None:
    message = {**TOOL_ROUND_TRIP[1], "content": "Let me check."}
    payload = build(messages=[TOOL_ROUND_TRIP[0], message])
    assert payload["messages"][1]["content"][0] == {"type": "text", "text": "Let me check."}
    assert payload["messages"][1]["content"][1]["type"] == "tool_use"


@pytest.mark.parametrize("arguments", ['{"city": ', '["Paris"]'])
def test_bad_tool_call_arguments_are_rejected(arguments: str) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    messages = [TOOL_ROUND_TRIP[0], {"role": "assistant", "tool_calls": [CLOCK_CALL, call]}]
    rejects("messages[1].tool_calls[1].function.arguments", messages=messages)


def test_deprecated_function_calling_is_rejected() -> None:
    rejects(
        "messages[1].role", messages=[TOOL_ROUND_TRIP[0], {"role": "function", "name": "f", "content": "x"}]
    )
    legacy = {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}
    rejects("messages[1].function_call", messages=[TOOL_ROUND_TRIP[0], legacy])


def test_tools() -> None:
    assert build(tools=[WEATHER, CLOCK])["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER["function"]["parameters"],
            "description": "Weather for a city",
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"tool_choice": "auto"}, {"type": "auto"}),
        ({"tool_choice": "required"}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "none"}),
        ({"tool_choice": {"type": "function", "function": {"name": "now"}}}, {"type": "tool", "name": "now"}),
        ({"parallel_tool_calls": True}, None),
        ({"parallel_tool_calls": False}, {"type": "auto", "disable_parallel_tool_use": True}),
        (
            {"tool_choice": "required", "parallel_tool_calls": False},
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        ({"tool_choice": "none", "parallel_tool_calls": False}, {"type": "none"}),
    ],
)
def test_tool_choice(fields: dict[str, Any], expected: dict[str, Any] | None) -> None:
    assert build(tools=[WEATHER, CLOCK], **fields).get("tool_choice") == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    payload = build(tool_choice="auto", parallel_tool_calls=False)
    assert "tool_choice" not in payload
    assert "tools" not in payload


def test_reserved_tool_name_is_rejected() -> None:
    tool = {"type": "function", "function": {"name": "response_format__x"}}
    rejects("tools[1].function.name", tools=[WEATHER, tool])


# ---- request: response_format ------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "final answer", "schema": SCHEMA, "strict": True},
}


def test_json_schema_becomes_a_forced_tool() -> None:
    payload = build(response_format=JSON_SCHEMA)
    [tool] = payload["tools"]
    assert tool["name"] == "response_format__final_answer"
    assert is_response_tool(tool["name"])
    assert tool["input_schema"] == SCHEMA
    assert payload["tool_choice"] == {"type": "tool", "name": "response_format__final_answer"}


def test_json_object_becomes_a_forced_tool() -> None:
    payload = build(response_format={"type": "json_object"})
    assert payload["tools"][0]["input_schema"] == {"type": "object"}
    assert payload["tool_choice"] == {"type": "tool", "name": payload["tools"][0]["name"]}


def test_text_format_changes_nothing() -> None:
    assert build(response_format={"type": "text"}) == build()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"type": "any"}),
        ({"tool_choice": "none"}, {"type": "tool", "name": "response_format__final_answer"}),
        ({"tool_choice": {"type": "function", "function": {"name": "now"}}}, {"type": "tool", "name": "now"}),
    ],
)
def test_json_schema_with_client_tools(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    payload = build(response_format=JSON_SCHEMA, tools=[CLOCK], **fields)
    assert [t["name"] for t in payload["tools"]] == ["now", "response_format__final_answer"]
    assert payload["tool_choice"] == expected


# ---- request: checked against the official SDK types -------------------------------------

RICH_REQUESTS: list[dict[str, Any]] = [
    request(),
    request(
        messages=[
            {"role": "system", "content": "sys"},
            *user_parts(
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                {
                    "type": "file",
                    "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"},
                },
            ),
            *TOOL_ROUND_TRIP[1:],
            {"role": "assistant", "content": "Rome."},
        ],
        tools=[WEATHER, CLOCK],
        tool_choice="required",
        parallel_tool_calls=False,
        stop=["END"],
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        user="u1",
        max_completion_tokens=8000,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ),
    request(response_format=JSON_SCHEMA, tools=[WEATHER], tool_choice="none"),
]


@pytest.mark.parametrize("body", RICH_REQUESTS)
def test_requests_match_the_anthropic_sdk_types(body: dict[str, Any]) -> None:
    types = anthropic.types
    payload = json.loads(ADAPTER.build_request(body, "claude-sonnet-4-5", DEP, "k").body)

    def valid(value: Any, sdk_type: Any, extra_keys: frozenset[str] = frozenset()) -> None:
        pydantic.TypeAdapter(sdk_type).validate_python(value)
        # TypedDicts ignore unknown keys when validating, so check key names separately.
        if isinstance(value, dict) and hasattr(sdk_type, "__required_keys__"):
            known = sdk_type.__required_keys__ | sdk_type.__optional_keys__ | extra_keys
            assert set(value) <= known, value

    # SDK 1.0 dropped the sampling parameters from its typed signature (newer models reject
    # them); the API still takes them on models that sample, and only the client's own
    # values are ever sent.
    sampling = frozenset({"temperature", "top_p", "top_k"})
    valid(payload, types.MessageCreateParams)
    valid(payload, types.message_create_params.MessageCreateParamsNonStreaming, sampling)
    # The SDK types hold lists as lazily validated Iterables: walk them by hand.
    blocks = {
        "text": types.TextBlockParam,
        "image": types.ImageBlockParam,
        "document": types.DocumentBlockParam,
        "tool_use": types.ToolUseBlockParam,
        "tool_result": types.ToolResultBlockParam,
    }
    for message in payload["messages"]:
        valid(message, types.MessageParam)
        for block in message["content"]:
            valid(block, types.ContentBlockParam)
            valid(block, blocks[block["type"]])
            if block["type"] == "tool_result" and isinstance(block.get("content"), list):
                for inner in block["content"]:
                    valid(inner, types.TextBlockParam)
    for tool in payload.get("tools", []):
        valid(tool, types.ToolParam)


# ---- response ---------------------------------------------------------------------------


def test_text_answer() -> None:
    completion, usage = parse(
        answer(
            [{"type": "text", "text": "Hello"}, {"type": "text", "text": " world", "citations": None}],
            cache_creation_input_tokens=100,
            cache_read_input_tokens=1000,
        )
    )
    assert completion["id"] == "chatcmpl-msg_01abc"
    assert completion["object"] == "chat.completion"
    assert isinstance(completion["created"], int)
    assert completion["model"] == "claude-sonnet-4-5-20250929"
    [choice] = completion["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == "Hello world"
    assert choice["message"]["tool_calls"] is None
    assert choice["finish_reason"] == "stop"
    details = {"cached_tokens": 1000, "cache_write_tokens": 100}
    assert completion["usage"] == {
        "prompt_tokens": 1110,
        "completion_tokens": 5,
        "total_tokens": 1115,
        "prompt_tokens_details": details,
    }
    assert usage == Usage(1110, 5, 1115, PromptTokensDetails(cached_tokens=1000, cache_write_tokens=100))


def test_tool_use_answer() -> None:
    completion, _ = parse(
        answer(
            [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris", "n": 1},
                },
                {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
            ],
            stop_reason="tool_use",
        )
    )
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris","n":1}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]


def test_tool_only_answer_has_no_content() -> None:
    completion, _ = parse(answer([{"type": "tool_use", "id": "t", "name": "now", "input": {}}], "tool_use"))
    assert completion["choices"][0]["message"]["content"] is None


def test_unknown_blocks_are_ignored() -> None:
    completion, _ = parse(
        answer(
            [
                {"type": "redacted_thinking", "data": "xx"},
                {
                    "type": "server_tool_use",
                    "id": "srvtoolu_1",
                    "name": "web_search",
                    "input": {"query": "q"},
                },
                {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []},
                {"type": "block_from_the_future", "payload": {"a": [1, 2]}},
                {"type": "text", "text": "Done"},
            ]
        )
    )
    assert completion["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Done",
        "refusal": None,
        "tool_calls": None,
    }


def test_empty_answer() -> None:
    completion, _ = parse(answer([], "max_tokens"))
    assert completion["choices"][0]["message"]["content"] is None
    assert completion["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        ("reason_from_the_future", "stop"),
    ],
)
def test_finish_reason(reason: str, finish: str) -> None:
    assert map_stop_reason(reason) == finish
    completion, _ = parse(answer([{"type": "text", "text": "x"}], reason))
    assert completion["choices"][0]["finish_reason"] == finish


def test_stop_reason_none_is_none_for_streams_and_stop_for_full_answers() -> None:
    assert map_stop_reason(None) is None
    completion, _ = parse(answer([{"type": "text", "text": "x"}], None))
    assert completion["choices"][0]["finish_reason"] == "stop"


def test_usage_mapping_without_cache_fields() -> None:
    usage = map_usage(AnthropicUsage(input_tokens=3, output_tokens=4, cache_read_input_tokens=None))
    assert usage == Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7)


def test_json_schema_round_trip() -> None:
    payload = build(response_format=JSON_SCHEMA)
    tool = payload["tool_choice"]["name"]
    completion, _ = parse(
        answer(
            [
                {"type": "text", "text": "Here you go:"},
                {"type": "tool_use", "id": "toolu_9", "name": tool, "input": {"answer": "42"}},
            ],
            stop_reason="tool_use",
        )
    )
    [choice] = completion["choices"]
    assert choice["message"]["content"] == '{"answer":"42"}'
    assert json.loads(choice["message"]["content"]) == {"answer": "42"}
    assert choice["message"]["tool_calls"] is None
    assert choice["finish_reason"] == "stop"


def test_structured_answer_cut_short_keeps_length() -> None:
    block = {"type": "tool_use", "id": "t", "name": "response_format__json_object", "input": {}}
    completion, _ = parse(answer([block], "max_tokens"))
    assert completion["choices"][0]["finish_reason"] == "length"


def test_structured_answer_next_to_client_tool_calls() -> None:
    completion, _ = parse(
        answer(
            [
                {"type": "tool_use", "id": "t1", "name": "now", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "response_format__x", "input": {"a": 1}},
            ],
            "tool_use",
        )
    )
    [choice] = completion["choices"]
    assert choice["message"]["content"] == '{"a":1}'
    assert [c["function"]["name"] for c in choice["message"]["tool_calls"]] == ["now"]
    assert choice["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("body", [b"<html>oops</html>", b'{"type": "error", "error": {"type": "x"}}', b""])
def test_undecodable_answer_is_a_502(body: bytes) -> None:
    with pytest.raises(EdgeError) as info:
        ADAPTER.parse_response(body)
    assert info.value.status == 502


# ---- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "anthropic_type", "type_", "code"),
    [
        (400, "invalid_request_error", "invalid_request_error", None),
        (401, "authentication_error", "authentication_error", None),
        (403, "permission_error", "permission_error", None),
        (404, "not_found_error", "invalid_request_error", "not_found"),
        (413, "request_too_large", "invalid_request_error", "request_too_large"),
        (429, "rate_limit_error", "rate_limit_error", "rate_limit_exceeded"),
        (500, "api_error", "server_error", None),
        (529, "overloaded_error", "server_error", "overloaded"),
        (402, "billing_error", "insufficient_quota", "insufficient_quota"),
        (504, "timeout_error", "timeout_error", "request_timeout"),
        (503, "error_from_the_future", "server_error", "error_from_the_future"),
        (409, "conflict_error", "invalid_request_error", "conflict_error"),
    ],
)
def test_error_mapping(status: int, anthropic_type: str, type_: str, code: str | None) -> None:
    body = {
        "type": "error",
        "error": {"type": anthropic_type, "message": "details here"},
        "request_id": "req_1",
    }
    detail = ADAPTER.parse_error(status, json.dumps(body).encode())
    assert (detail.message, detail.type, detail.code, detail.param) == ("details here", type_, code, None)


def test_non_json_error() -> None:
    detail = ADAPTER.parse_error(502, b"<html>Bad Gateway</html>" + b"x" * 500)
    assert detail.type == "upstream_error"
    assert detail.message == "upstream answered 502: <html>Bad Gateway</html>" + "x" * 176
    assert ADAPTER.parse_error(503, b"").message == "upstream answered 503: HTTP 503"
