"""The fake upstream speaks both wire formats faithfully and obeys its behaviour markers."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from edge_agent.fake_upstream import BackgroundServer, add_arguments

OPENAI_HEADERS = {"Authorization": "Bearer sk-test"}
ANTHROPIC_HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        },
    },
]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as c:
        yield c


def chat(client: httpx.Client, text: str = "Hello there", **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    return client.post("/v1/chat/completions", json=body, headers=OPENAI_HEADERS)


def messages(
    client: httpx.Client, text: str = "Hello there", headers: Any = None, **extra: Any
) -> httpx.Response:
    body = {"model": "claude-sonnet-4", "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    body.update(extra)
    return client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS if headers is None else headers)


def sse_events(raw: str) -> list[tuple[str | None, str]]:
    """(event name, data) per SSE frame."""
    events = []
    for frame in raw.split("\n\n"):
        if not frame.strip():
            continue
        name, data = None, ""
        for line in frame.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        events.append((name, data))
    return events


# -- OpenAI ---------------------------------------------------------------------------------------


def test_openai_non_stream_shape(client: httpx.Client) -> None:
    resp = chat(client, "What is the capital of France?")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{24}", body["id"])
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    assert isinstance(body["created"], int)
    assert body["system_fingerprint"].startswith("fp_")
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop" and choice["logprobs"] is None
    assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
    content = choice["message"]["content"]
    assert 8 <= len(content.split()) <= 40
    usage = body["usage"]
    assert usage["prompt_tokens"] == 6 + 3
    assert usage["completion_tokens"] == len(content.split())
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == content


def test_openai_deterministic(client: httpx.Client) -> None:
    first = chat(client, "determinism please").json()["choices"][0]["message"]["content"]
    second = chat(client, "determinism please").json()["choices"][0]["message"]["content"]
    other = chat(client, "something else entirely").json()["choices"][0]["message"]["content"]
    assert first == second
    assert first != other


def test_openai_n_choices(client: httpx.Client) -> None:
    body = chat(client, "two answers", n=2).json()
    assert [c["index"] for c in body["choices"]] == [0, 1]
    words = sum(len(c["message"]["content"].split()) for c in body["choices"])
    assert body["usage"]["completion_tokens"] == words


def test_openai_words_marker_and_max_tokens(client: httpx.Client) -> None:
    exact = chat(client, "[[fake:words=50]] long one").json()
    assert len(exact["choices"][0]["message"]["content"].split()) == 50
    cut = chat(client, "[[fake:words=50]] long one", max_tokens=5).json()
    assert cut["choices"][0]["finish_reason"] == "length"
    assert len(cut["choices"][0]["message"]["content"].split()) == 5
    assert cut["usage"]["completion_tokens"] == 5


def test_openai_tool_calls(client: httpx.Client) -> None:
    body = chat(client, "Find the latest news about Python", tools=TOOLS).json()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert re.fullmatch(r"call_[A-Za-z0-9]+", call["id"])
    assert call["type"] == "function" and call["function"]["name"] == "search"
    assert json.loads(call["function"]["arguments"]) == {"query": "Find the latest news"}
    ChatCompletion.model_validate(body)

    named = chat(
        client, "Paris", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "weather"}}
    ).json()
    call = named["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris", "days": 1}

    assert chat(client, "no tools", tools=TOOLS, tool_choice="none").json()["choices"][0]["message"][
        "content"
    ]

    after_tool = {
        "model": "gpt-4o-mini",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "search it"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "result text"},
        ],
    }
    answer = client.post("/v1/chat/completions", json=after_tool, headers=OPENAI_HEADERS).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["choices"][0]["message"]["content"]


def test_openai_stream(client: httpx.Client) -> None:
    text = "Stream me something"
    expected = chat(client, text).json()["choices"][0]["message"]["content"]
    resp = chat(client, text, stream=True, stream_options={"include_usage": True})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in sse_events(resp.text)]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(data) for data in events[:-1]]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        assert chunk["object"] == "chat.completion.chunk"
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] == "stop"
    content_chunks = chunks[1:-2]
    assert len(content_chunks) == len(expected.split())
    assert "".join(c["choices"][0]["delta"]["content"] for c in content_chunks) == expected
    assert usage_chunk["usage"]["completion_tokens"] == len(expected.split())
    assert all(c["usage"] is None for c in chunks[:-1])

    plain = [data for _, data in sse_events(chat(client, text, stream=True).text)]
    assert "usage" not in json.loads(plain[-2])  # no include_usage: finish chunk, then [DONE]


def test_openai_stream_tool_call(client: httpx.Client) -> None:
    resp = chat(client, "Find the latest news about Python", tools=TOOLS, stream=True)
    chunks = [json.loads(data) for _, data in sse_events(resp.text)[:-1]]
    opening = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert opening["index"] == 0 and opening["type"] == "function"
    assert opening["function"] == {"name": "search", "arguments": ""}
    arguments = "".join(
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]
    )
    assert json.loads(arguments) == {"query": "Find the latest news"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


def test_openai_stream_error_after(client: httpx.Client) -> None:
    resp = chat(client, "[[fake:stream_error_after=3]] [[fake:words=10]] go", stream=True)
    events = [data for _, data in sse_events(resp.text)]
    assert "[DONE]" not in events
    assert len(events) == 1 + 3 + 1  # role chunk, 3 content chunks, error
    error = json.loads(events[-1])["error"]
    assert set(error) == {"message", "type", "param", "code"}


# -- Anthropic ------------------------------------------------------------------------------------


def test_anthropic_non_stream_shape(client: httpx.Client) -> None:
    resp = messages(client, "What is the capital of France?", system="Be brief.")
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert re.fullmatch(r"msg_[A-Za-z0-9]+", body["id"])
    assert body["type"] == "message" and body["role"] == "assistant" and body["model"] == "claude-sonnet-4"
    (block,) = body["content"]
    assert block["type"] == "text" and 8 <= len(block["text"].split()) <= 40
    assert body["stop_reason"] == "end_turn" and body["stop_sequence"] is None
    assert body["usage"]["input_tokens"] == 6 + 3 + 2
    assert body["usage"]["output_tokens"] == len(block["text"].split())
    assert messages(client, "What is the capital of France?", system="Be brief.").json()["content"] == [block]


def test_anthropic_max_tokens_and_stop_sequence(client: httpx.Client) -> None:
    cut = messages(client, "[[fake:words=30]] hi", max_tokens=4).json()
    assert cut["stop_reason"] == "max_tokens" and cut["usage"]["output_tokens"] == 4
    stopped = messages(client, "please say banana now", stop_sequences=["banana"]).json()
    assert stopped["stop_reason"] == "stop_sequence" and stopped["stop_sequence"] == "banana"
    assert "banana" not in stopped["content"][0]["text"]


def test_anthropic_tool_use(client: httpx.Client) -> None:
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    body = messages(client, "Look this up for me please", tools=tools).json()
    assert body["stop_reason"] == "tool_use"
    (block,) = body["content"]
    assert block["type"] == "tool_use" and block["name"] == "lookup"
    assert re.fullmatch(r"toolu_[A-Za-z0-9]+", block["id"])
    assert block["input"] == {"q": "Look this up for me "}

    history = [
        {"role": "user", "content": "Look this up"},
        {"role": "assistant", "content": [block]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block["id"], "content": "42"}]},
    ]
    answer = messages(client, tools=tools, messages=history).json()
    assert answer["stop_reason"] == "end_turn" and answer["content"][0]["type"] == "text"
    none = messages(client, "no tool", tools=tools, tool_choice={"type": "none"}).json()
    assert none["stop_reason"] == "end_turn"


def test_anthropic_stream_events(client: httpx.Client) -> None:
    expected = messages(client, "stream this please").json()["content"][0]["text"]
    resp = messages(client, "stream this please", stream=True)
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    names = [name for name, _ in events]
    deltas = len(expected.split())
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    data = [json.loads(d) for _, d in events]
    assert all(d["type"] == n for n, d in zip(names, data, strict=True))
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 6
    assert data[1]["content_block"] == {"type": "text", "text": ""}
    assert "".join(d["delta"]["text"] for d in data[3 : 3 + deltas]) == expected
    assert data[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert data[-2]["usage"] == {"output_tokens": deltas}


def test_anthropic_stream_tool_use_and_error(client: httpx.Client) -> None:
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    data = [
        json.loads(d) for _, d in sse_events(messages(client, "Look it up", tools=tools, stream=True).text)
    ]
    assert data[1]["content_block"]["type"] == "tool_use" and data[1]["content_block"]["input"] == {}
    partial = "".join(d["delta"]["partial_json"] for d in data if d["type"] == "content_block_delta")
    assert json.loads(partial) == {"q": "Look it up"}
    assert data[-2]["delta"]["stop_reason"] == "tool_use"

    events = sse_events(messages(client, "[[fake:stream_error_after=2]] hi", stream=True).text)
    assert [n for n, _ in events][-1] == "error"
    assert [n for n, _ in events].count("content_block_delta") == 2
    assert json.loads(events[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }


def test_anthropic_request_errors(client: httpx.Client) -> None:
    no_version = messages(client, headers={"x-api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["type"] == "error"
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    body = {"model": "claude-sonnet-4", "messages": [{"role": "user", "content": "hi"}]}
    no_max = client.post("/v1/messages", json=body, headers=ANTHROPIC_HEADERS)
    assert no_max.status_code == 400 and "max_tokens" in no_max.json()["error"]["message"]


# -- auth and errors ------------------------------------------------------------------------------


def test_missing_key(client: httpx.Client) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    openai_resp = client.post("/v1/chat/completions", json=body)
    assert openai_resp.status_code == 401
    assert set(openai_resp.json()["error"]) == {"message", "type", "param", "code"}
    empty = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer"})
    assert empty.status_code == 401
    anthropic_resp = messages(client, headers={"anthropic-version": "2023-06-01"})
    assert anthropic_resp.status_code == 401
    assert anthropic_resp.json()["error"]["type"] == "authentication_error"


def test_require_key() -> None:
    with BackgroundServer(require_key="right") as srv, httpx.Client(base_url=srv.url) as c:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        url = "/v1/chat/completions"
        assert c.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.post(url, json=body, headers={"Authorization": "Bearer right"}).status_code == 200
        wrong = {**ANTHROPIC_HEADERS, "x-api-key": "wrong"}
        assert messages(c, headers=wrong).status_code == 401
        assert messages(c, headers={**ANTHROPIC_HEADERS, "x-api-key": "right"}).status_code == 200


def test_status_markers(client: httpx.Client) -> None:
    limited = chat(client, "[[fake:status=429]] hi")
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1" and limited.headers["retry-after-ms"] == "1000"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"

    anthropic = messages(client, "[[fake:status=429]][[fake:retry_after=0.2]] hi")
    assert anthropic.status_code == 429 and anthropic.headers["retry-after"] == "0.2"
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": anthropic.json()["error"]["message"]},
    }

    overloaded = messages(client, "[[fake:status=529]]")
    assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"
    assert chat(client, "[[fake:status=503]]").json()["error"]["type"] == "server_error"


def test_echo_error_marker_quotes_the_prompt_in_the_error(client: httpx.Client) -> None:
    openai = chat(client, "[[fake:status=400]][[fake:echo_error]] mail me at a@b.example")
    assert openai.status_code == 400
    assert openai.json()["error"]["message"] == "Refused prompt: mail me at a@b.example"
    anthropic = messages(client, "[[fake:status=422]][[fake:echo_error]] card 4242")
    assert anthropic.json()["error"]["message"] == "Refused prompt: card 4242"
    assert chat(client, "[[fake:status=400]] quiet").json()["error"]["message"] == "Invalid request."


def test_retry_after_marker_overrides(client: httpx.Client) -> None:
    openai = chat(client, "[[fake:status=429]] [[fake:retry_after=0.3]] hi")
    assert openai.status_code == 429
    assert openai.headers["retry-after"] == "0.3" and openai.headers["retry-after-ms"] == "300"
    anthropic = messages(client, "[[fake:status=429]] hi")
    assert anthropic.headers["retry-after"] == "1" and "retry-after-ms" not in anthropic.headers
    assert chat(client, "[[fake:status=429]] [[fake:retry_after=120]]").headers["retry-after"] == "120"


def test_times_marker(client: httpx.Client) -> None:
    client.post("/_fake/reset")
    text = "[[fake:status=500]] [[fake:times=2]] flaky"
    assert [chat(client, text).status_code for _ in range(4)] == [500, 500, 200, 200]
    recovered = chat(client, text).json()
    assert recovered["choices"][0]["message"]["content"].startswith("Re: flaky")

    # Another text, and the same text on the other API, have their own counters.
    other = "[[fake:status=500]] [[fake:times=2]] other"
    assert [chat(client, other).status_code for _ in range(3)] == [500, 500, 200]
    assert [messages(client, text).status_code for _ in range(3)] == [500, 500, 200]
    assert messages(client, text).json()["type"] == "message"

    # Reset clears the counters: the failures start over.
    client.post("/_fake/reset")
    assert [chat(client, text).status_code for _ in range(3)] == [500, 500, 200]

    # 429 keeps its retry-after while it applies; times=0 never fails; no times fails always.
    limited = "[[fake:status=429]] [[fake:times=1]] [[fake:retry_after=0.3]] rl"
    first = chat(client, limited)
    assert first.status_code == 429 and first.headers["retry-after-ms"] == "300"
    assert chat(client, limited).status_code == 200
    assert chat(client, "[[fake:status=503]] [[fake:times=0]]").status_code == 200
    assert [chat(client, "[[fake:status=503]] always").status_code for _ in range(3)] == [503] * 3


def test_times_marker_other_failures(client: httpx.Client) -> None:
    with pytest.raises(httpx.TransportError):
        chat(client, "[[fake:drop]] [[fake:times=1]] d")
    assert chat(client, "[[fake:drop]] [[fake:times=1]] d").status_code == 200

    text = "[[fake:stream_error_after=2]] [[fake:times=1]] [[fake:words=5]] s"
    broken = [n for n, _ in sse_events(messages(client, text, stream=True).text)]
    assert broken[-1] == "error"
    whole = [n for n, _ in sse_events(messages(client, text, stream=True).text)]
    assert whole[-1] == "message_stop" and whole.count("content_block_delta") == 5

    with pytest.raises(httpx.ReadTimeout):
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "[[fake:timeout]] [[fake:times=1]] t"}],
        }
        client.post("/v1/chat/completions", json=body, headers=OPENAI_HEADERS, timeout=0.2)
    assert chat(client, "[[fake:timeout]] [[fake:times=1]] t").status_code == 200

    started = time.perf_counter()
    chat(client, "[[fake:delay_ms=300]] [[fake:times=1]] slow")
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    assert chat(client, "[[fake:delay_ms=300]] [[fake:times=1]] slow").status_code == 200
    assert time.perf_counter() - started < 0.3


def test_failures_injected(client: httpx.Client) -> None:
    client.post("/_fake/reset")
    chat(client, "fine")
    chat(client, "[[fake:status=429]] a")
    messages(client, "[[fake:status=529]] b")
    chat(client, "[[fake:delay_ms=1]] slow but fine")
    chat(client, "[[fake:stream_error_after=1]] c", stream=True)
    chat(client, "[[fake:stream_error_after=1]] not streamed")  # the stream markers do not apply
    with pytest.raises(httpx.TransportError):
        chat(client, "[[fake:drop]]")
    for _ in range(3):
        chat(client, "[[fake:status=500]] [[fake:times=1]] once")
    assert client.get("/_fake/stats").json()["failures_injected"] == 5
    client.post("/_fake/config", json={"error_rate": 1})
    try:
        chat(client, "rate")
        messages(client, "rate")
    finally:
        client.post("/_fake/config", json={"error_rate": 0})
    stats = client.get("/_fake/stats").json()
    assert stats["failures_injected"] == 7 and stats["requests"] == 12
    assert client.post("/_fake/reset").json()["failures_injected"] == 0


def test_error_rate_one_then_config_zero() -> None:
    with BackgroundServer(error_rate=1.0, error_status=500) as srv, httpx.Client(base_url=srv.url) as c:
        for _ in range(5):
            openai = chat(c, "hi")
            assert openai.status_code == 500
            assert openai.json()["error"]["type"] == "server_error"
            assert set(openai.json()["error"]) == {"message", "type", "param", "code"}
            anthropic = messages(c, "hi")
            assert anthropic.status_code == 500
            assert anthropic.json() == {
                "type": "error",
                "error": {"type": "api_error", "message": "Internal server error"},
            }
        assert chat(c, "hi", stream=True).status_code == 500
        assert c.get("/_fake/stats").json()["failures_injected"] == 11

        assert c.post("/_fake/config", json={"error_rate": 0}).json()["error_rate"] == 0.0
        for _ in range(5):
            assert chat(c, "hi").json()["object"] == "chat.completion"
            assert messages(c, "hi").json()["type"] == "message"
        assert c.get("/_fake/stats").json()["failures_injected"] == 11


def test_delay_marker(client: httpx.Client) -> None:
    started = time.perf_counter()
    assert chat(client, "[[fake:delay_ms=300]] slow").status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_chunk_delay_marker(client: httpx.Client) -> None:
    started = time.perf_counter()
    resp = messages(client, "[[fake:chunk_delay_ms=20]][[fake:words=5]] hi", stream=True)
    assert resp.status_code == 200
    assert time.perf_counter() - started >= 0.2  # 10 frames after the first, 20 ms apart


def test_drop_markers(client: httpx.Client) -> None:
    with pytest.raises(httpx.TransportError):
        chat(client, "[[fake:drop]]")
    with pytest.raises(httpx.TransportError):
        chat(client, "[[fake:stream_drop_after=2]] hi", stream=True)
    assert chat(client, "still alive").status_code == 200


def test_stats_reset_and_cancelled(server: BackgroundServer, client: httpx.Client) -> None:
    client.post("/_fake/reset")
    chat(client, "one")
    chat(client, "two")
    messages(client, "three")
    stats = client.get("/_fake/stats").json()
    assert stats == {
        "requests": 3,
        "by_path": {"/v1/chat/completions": 2, "/v1/messages": 1},
        "by_model": {"gpt-4o-mini": 2, "claude-sonnet-4": 1},
        "by_field": {"model": 3, "messages": 3, "max_tokens": 1},
        "cancelled": 0,
        "failures_injected": 0,
        "last_headers": {"/v1/chat/completions": OPENAI_HEADERS, "/v1/messages": ANTHROPIC_HEADERS},
    }

    with pytest.raises(httpx.ReadTimeout):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "[[fake:timeout]]"}]}
        client.post("/v1/chat/completions", json=body, headers=OPENAI_HEADERS, timeout=0.2)
    deadline = time.monotonic() + 2
    while client.get("/_fake/stats").json()["cancelled"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.get("/_fake/stats").json()["cancelled"] == 1
    assert client.get("/_fake/stats").json()["failures_injected"] == 1  # the timeout

    reset = client.post("/_fake/reset").json()
    assert reset == {
        "requests": 0,
        "by_path": {},
        "by_model": {},
        "by_field": {},
        "cancelled": 0,
        "failures_injected": 0,
        "last_headers": {},
    }
    assert client.get("/health").status_code == 200


def test_runtime_config(client: httpx.Client) -> None:
    config = client.post("/_fake/config", json={"error_rate": 1, "error_status": 503}).json()
    assert config["error_rate"] == 1.0 and config["error_status"] == 503
    try:
        assert chat(client, "hi").status_code == 503
        assert messages(client, "hi").json()["error"]["type"] == "api_error"
    finally:
        client.post("/_fake/config", json={"error_rate": 0, "error_status": 500})
    assert chat(client, "hi").status_code == 200
    assert client.post("/_fake/config", json={"nope": 1}).status_code == 400


def test_cli_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_UPSTREAM_PORT", "9123")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--latency-ms", "5", "--require-key", "k"])
    assert (args.host, args.port, args.latency_ms, args.jitter_ms) == ("127.0.0.1", 9123, 5.0, 0.0)
    assert (args.error_rate, args.error_status, args.require_key) == (0.0, 500, "k")


def test_count_tokens(client: httpx.Client) -> None:
    body = {
        "model": "claude-sonnet-4",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "one two"}],
    }
    counted = client.post("/v1/messages/count_tokens", json=body, headers=ANTHROPIC_HEADERS)
    assert counted.status_code == 200 and counted.json() == {
        "input_tokens": 2 + 3 + 2
    }  # words + 3 per message
    assert (
        client.post("/v1/messages/count_tokens", json={"model": "m"}, headers=ANTHROPIC_HEADERS).status_code
        == 400
    )
    refused = client.post("/v1/messages/count_tokens", json=body, headers={"anthropic-version": "2023-06-01"})
    assert refused.status_code == 401
