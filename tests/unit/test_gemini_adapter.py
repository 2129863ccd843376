"""GeminiAdapter: OpenAI chat completions <-> Gemini generateContent, both ways, plus errors and
streams. Every request the adapter builds is validated with google-genai's own pydantic types
(which forbid unknown fields), so a field Gemini would not accept fails here."""

from __future__ import annotations

import json
from typing import Any

import openai.types.chat
import pydantic
import pytest
from google.genai import types

from edge_workers.providers.gemini import GeminiAdapter
from edge_workers.providers.gemini_request import to_gemini_schema
from shared.config import Deployment
from shared.errors import EdgeError
from shared.sse import SSEParser

DEP = Deployment(
    model_name="gemini",
    provider="gemini",
    model="gemini-2.5-flash",
    base_url="https://generativelanguage.googleapis.com/v1beta",
    api_key_env="GEMINI_API_KEY",
)
ADAPTER = GeminiAdapter()
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
_CONTENTS = pydantic.TypeAdapter(list[types.Content])
_TOOLS = pydantic.TypeAdapter(list[types.Tool])
_COMPLETION = pydantic.TypeAdapter(openai.types.chat.ChatCompletion)
_CHUNK = pydantic.TypeAdapter(openai.types.chat.ChatCompletionChunk)


def validate(payload: dict[str, Any]) -> None:
    """The request as google-genai's types see it: each section of GenerateContentRequest."""
    assert set(payload) <= {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
    _CONTENTS.validate_python(payload["contents"])
    if "systemInstruction" in payload:
        types.Content.model_validate(payload["systemInstruction"])
    if "tools" in payload:
        _TOOLS.validate_python(payload["tools"])
    if "toolConfig" in payload:
        types.ToolConfig.model_validate(payload["toolConfig"])
    if "generationConfig" in payload:
        types.GenerationConfig.model_validate(payload["generationConfig"])


def build(stream: bool = False, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gemini", "messages": [{"role": "user", "content": "hi"}], **fields}
    upstream = ADAPTER.build_request(body, "gemini-2.5-flash", DEP, "g-key", stream)
    payload: dict[str, Any] = json.loads(upstream.body)
    validate(payload)
    return payload


def rejects(param: str | None, **fields: Any) -> EdgeError:
    with pytest.raises(EdgeError) as info:
        build(**fields)
    assert info.value.status == 400
    assert info.value.param == param
    return info.value


def test_url_and_key_header_never_the_query() -> None:
    body = {"model": "gemini", "messages": [{"role": "user", "content": "hi"}]}
    plain = ADAPTER.build_request(body, "gemini-2.5-flash", DEP, "g-key", False)
    assert (
        plain.url
        == "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    )
    assert plain.headers["x-goog-api-key"] == "g-key"
    streamed = ADAPTER.build_request(body, "models/gemini-2.5-flash", DEP, "g-key", True)
    assert streamed.url.endswith("/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert "key=" not in streamed.url


def test_system_and_multi_turn_merge_same_roles() -> None:
    payload = build(
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            {"role": "user", "content": "one"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "three"},
        ]
    )
    assert payload["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert [c["role"] for c in payload["contents"]] == ["user", "model", "user"]
    assert payload["contents"][0]["parts"] == [{"text": "one"}, {"text": "two"}]


def test_images_inline_gs_uri_by_reference_http_refused() -> None:
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/cat.jpg"}},
    ]
    parts = build(messages=[{"role": "user", "content": content}])["contents"][0]["parts"]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": PNG}}
    assert parts[2] == {"fileData": {"mimeType": "image/jpeg", "fileUri": "gs://bucket/cat.jpg"}}
    error = rejects(
        "messages[0].content[0]",
        messages=[
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}],
            }
        ],
    )
    assert "does not fetch" in error.message


def test_tools_calls_and_results_paired_by_name() -> None:
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather now",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    noargs = {
        "type": "function",
        "function": {"name": "now", "parameters": {"type": "object", "properties": {}}},
    }
    payload = build(
        tools=[weather, noargs],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    )
    declarations = payload["tools"][0]["functionDeclarations"]
    assert declarations[0]["parameters"] == {
        "type": "OBJECT",
        "properties": {
            "city": {"type": "STRING"},
            "unit": {"type": "STRING", "nullable": True, "enum": ["c", "f"]},
        },
        "required": ["city"],
    }
    assert "parameters" not in declarations[1]  # Gemini refuses an OBJECT without properties
    assert payload["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}
    }
    model_turn, results = payload["contents"][1], payload["contents"][2]
    assert model_turn["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]
    assert results["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
        {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
    ]
    rejects(
        "messages[1].tool_call_id",
        messages=[{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "y"}],
    )


def test_generation_config_and_structured_output() -> None:
    schema = {
        "$defs": {
            "Step": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
        },
        "type": "object",
        "properties": {
            "steps": {"type": "array", "items": {"$ref": "#/$defs/Step"}},
            "answer": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "kind": {"const": "math"},
        },
        "required": ["steps", "answer", "kind"],
        "additionalProperties": False,
    }
    payload = build(
        n=2,
        max_completion_tokens=50,
        stop="END",
        temperature=0.5,
        top_p=0.9,
        seed=7,
        top_k=40,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "r", "schema": schema, "strict": True},
        },
    )
    config = payload["generationConfig"]
    assert (
        config["candidateCount"] == 2
        and config["maxOutputTokens"] == 50
        and config["stopSequences"] == ["END"]
    )
    assert config["topK"] == 40 and config["seed"] == 7
    assert config["responseMimeType"] == "application/json"
    response_schema = config["responseSchema"]
    types.Schema.model_validate(response_schema)
    assert response_schema["properties"]["steps"]["items"]["properties"]["text"] == {"type": "STRING"}
    assert response_schema["properties"]["answer"] == {"nullable": True, "type": "INTEGER"}
    assert response_schema["properties"]["kind"] == {"enum": ["math"], "type": "STRING"}
    assert "additionalProperties" not in response_schema
    assert build(response_format={"type": "json_object"})["generationConfig"] == {
        "responseMimeType": "application/json"
    }
    assert "generationConfig" not in build()


def test_recursive_schema_and_unsupported_params_are_400() -> None:
    recursive = {
        "$defs": {"N": {"type": "object", "properties": {"next": {"$ref": "#/$defs/N"}}}},
        "$ref": "#/$defs/N",
    }
    with pytest.raises(EdgeError):
        to_gemini_schema(recursive, "x")
    rejects("logprobs", logprobs=True)
    rejects("logit_bias", logit_bias={"1": 1.0})


def answer(parts: list[dict[str, Any]], finish: str = "STOP", **extra: Any) -> bytes:
    body = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": finish, "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 6,
            "totalTokenCount": 17,
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "abc",
        **extra,
    }
    types.GenerateContentResponse.model_validate(body)  # the shape Gemini really answers
    return json.dumps(body).encode()


def test_answer_text_usage_and_thoughts() -> None:
    raw, usage = ADAPTER.parse_response(answer([{"text": "thinking...", "thought": True}, {"text": "Hello"}]))
    completion = _COMPLETION.validate_json(raw)
    assert completion.choices[0].message.content == "Hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gemini-2.5-flash-001"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        10,
        7,
        17,
    )
    assert completion.usage and completion.usage.prompt_tokens_details
    assert completion.usage.prompt_tokens_details.cached_tokens == 6


def test_answer_function_call_finish_reasons_and_safety() -> None:
    raw, _ = ADAPTER.parse_response(answer([{"functionCall": {"name": "f", "args": {"a": 1}}}]))
    completion = _COMPLETION.validate_json(raw)
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "f" and json.loads(call.function.arguments) == {"a": 1}  # type: ignore[union-attr]
    assert call.id.startswith("call_")
    raw, _ = ADAPTER.parse_response(answer([{"text": "cut"}], "MAX_TOKENS"))
    assert _COMPLETION.validate_json(raw).choices[0].finish_reason == "length"
    raw, _ = ADAPTER.parse_response(answer([{"text": "partial"}], "SAFETY"))
    assert _COMPLETION.validate_json(raw).choices[0].finish_reason == "content_filter"
    blocked = json.dumps(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    )
    with pytest.raises(EdgeError) as info:
        ADAPTER.parse_response(blocked.encode())
    assert info.value.status == 400 and info.value.code == "content_filter"
    with pytest.raises(EdgeError) as info:
        ADAPTER.parse_response(b"<html>")
    assert info.value.status == 502


def error(status: int, name: str, message: str, details: list[dict[str, Any]] | None = None) -> bytes:
    return json.dumps(
        {"error": {"code": status, "message": message, "status": name, "details": details or []}}
    ).encode()


def test_errors_rate_limit_context_length_and_refused_key() -> None:
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "17s"}]
    raw = error(429, "RESOURCE_EXHAUSTED", "quota", retry)
    detail = ADAPTER.parse_error(429, raw)
    assert (detail.type, detail.code) == ("rate_limit_error", "rate_limit_exceeded")
    assert ADAPTER.upstream_status(429, raw, None) == (429, 17.0)
    assert ADAPTER.upstream_status(429, raw, 2.0) == (429, 2.0)  # a header, when sent, wins
    too_long = error(
        400,
        "INVALID_ARGUMENT",
        "The input token count (2000000) exceeds the maximum number of tokens allowed (1048576).",
    )
    assert ADAPTER.parse_error(400, too_long).code == "context_length_exceeded"
    bad_key = error(
        400,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        [{"reason": "API_KEY_INVALID"}],
    )
    assert ADAPTER.upstream_status(400, bad_key, None) == (401, None)
    assert ADAPTER.parse_error(503, b"oops").type == "upstream_error"


def events(*answers: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(a).encode() + b"\r\n\r\n" for a in answers)


def translate(raw: bytes) -> tuple[list[Any], bool]:
    translator = ADAPTER.stream_translator()
    chunks = [
        _CHUNK.validate_json(b)
        for event, data in SSEParser().feed_bytes(raw)
        for b, _ in translator.feed(event, data)
    ]
    return chunks, translator.finished


def test_stream_text_tool_call_and_usage() -> None:
    def part(p: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": [p]}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}

    last = part({"functionCall": {"name": "f", "args": {}}}, "STOP")
    last["usageMetadata"] = {"promptTokenCount": 5, "candidatesTokenCount": 2, "totalTokenCount": 7}
    chunks, finished = translate(events(part({"text": "He"}), part({"text": "llo"}), last))
    assert finished
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello"
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert (
        calls[0][0].function.name == "f" and calls[0][0].function.arguments == "{}" and calls[0][0].index == 0
    )
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage and chunks[-1].usage.total_tokens == 7


def test_stream_cut_blocked_and_error_events() -> None:
    _, finished = translate(
        events({"candidates": [{"content": {"role": "model", "parts": [{"text": "x"}]}, "index": 0}]})
    )
    assert not finished
    from edge_workers.providers.base import StreamError

    with pytest.raises(StreamError) as info:
        translate(events({"promptFeedback": {"blockReason": "OTHER"}}))
    assert info.value.status == 400 and info.value.detail.code == "content_filter"
    with pytest.raises(StreamError) as info:
        translate(events({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}))
    assert info.value.status == 503 and info.value.detail.code == "overloaded"


def test_thought_signature_rides_in_the_call_id_and_comes_back() -> None:
    part = {"functionCall": {"name": "f", "args": {"a": 1}}, "thoughtSignature": "c2lnbmF0dXJl"}
    raw, _ = ADAPTER.parse_response(answer([part]))
    call = _COMPLETION.validate_json(raw).choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.id.endswith("__thought__c2lnbmF0dXJl")
    follow_up = build(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": call.id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "done"},
        ]
    )
    sent = follow_up["contents"][1]["parts"][0]
    assert sent["thoughtSignature"] == "c2lnbmF0dXJl" and sent["functionCall"]["name"] == "f"
    assert follow_up["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"
