"""Streaming end to end: real processes, the official OpenAI SDK as the client."""

from __future__ import annotations

import itertools
import json
import time
import uuid

import httpx
import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_front.keys import MASTER_NAMESPACE
from shared import keyspace
from shared.cache_keys import chat_cache_key
from tests.integration.conftest import fake_stats, sample, scrape, wait_until

MODELS = ("gpt-4o-mini", "claude-sonnet-4-5")
NO_CACHE = {"Cache-Control": "no-cache, no-store"}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "required": ["query"],
            },
        },
    }
]


def unique(text: str = "tell me") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def streamed_text(stream) -> str:  # type: ignore[no-untyped-def]
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


@pytest.mark.parametrize("model", MODELS)
def test_streamed_text_equals_non_streamed_text(client: openai.OpenAI, model: str) -> None:
    messages = unique()
    whole = client.chat.completions.create(model=model, messages=messages, extra_headers=NO_CACHE)
    chunks = list(
        client.chat.completions.create(model=model, messages=messages, stream=True, extra_headers=NO_CACHE)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len(chunks) > 3  # really streamed, one chunk per upstream event
    assert streamed_text(chunks) == whole.choices[0].message.content


@pytest.mark.parametrize("model", MODELS)
def test_the_sdk_stream_helper_and_tool_call_streaming(client: openai.OpenAI, model: str) -> None:
    with client.chat.completions.stream(model=model, messages=unique("look it up"), tools=TOOLS) as stream:
        deltas = [event for event in stream if event.type == "tool_calls.function.arguments.delta"]
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert final.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "lookup" and call.id
    assert "query" in json.loads(call.function.arguments)
    assert deltas  # the arguments arrived as fragments


@pytest.mark.parametrize("model", MODELS)
def test_include_usage_gives_the_final_usage_chunk(client: openai.OpenAI, model: str) -> None:
    chunks = list(
        client.chat.completions.create(
            model=model, messages=unique(), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])
    without = list(client.chat.completions.create(model=model, messages=unique(), stream=True))
    assert all(c.choices for c in without)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("marker", ["[[fake:stream_error_after=3]]", "[[fake:stream_drop_after=3]]"])
def test_failure_after_the_stream_began_is_an_error_event_and_is_not_cached(
    client: openai.OpenAI, model: str, marker: str
) -> None:
    messages = unique(marker)
    received = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(model=model, messages=messages, stream=True):
            received.append(chunk)
    assert received  # the error came inside a stream that had started, not as an HTTP status
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=True)
    assert raw.headers["x-edge-cache"] == "miss"
    with pytest.raises(openai.APIError):
        list(raw.parse())


@pytest.mark.parametrize("model", MODELS)
def test_failure_before_the_first_byte_is_a_plain_http_error(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model=model, messages=unique("[[fake:status=429]]"), stream=True)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model=model, messages=unique("[[fake:drop]]"), stream=True)
    assert caught.value.status_code == 502


def test_chunks_are_delivered_as_the_upstream_sends_them(client: openai.OpenAI) -> None:
    arrivals = []
    stream = client.chat.completions.create(
        model="gpt-4o-mini", messages=unique("[[fake:chunk_delay_ms=300]] [[fake:words=4]]"), stream=True
    )
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())
    # The upstream pauses 300 ms between chunks: had anything buffered them, they would arrive together.
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert len(arrivals) >= 4 and min(gaps) > 0.2


# A stream that is over (and cached) in about a second if nothing cancels it.
SHORT_STREAM = "[[fake:chunk_delay_ms=50]] [[fake:words=20]]"


@pytest.mark.parametrize("model", MODELS)
def test_client_disconnect_cancels_the_upstream_and_caches_nothing(
    stack: DevStack, front: Front, client: openai.OpenAI, workers: dict[str, Worker], model: str
) -> None:
    assert stack.redis is not None
    worker = workers["openai" if model.startswith("gpt") else "anthropic"]
    cancelled_before = fake_stats(stack.upstream_url)["cancelled"]
    jobs_before = scrape(worker.metrics_url)
    messages = unique(SHORT_STREAM)
    body = {"model": model, "messages": messages, "stream": True}
    l2_key = keyspace.cache_entry(chat_cache_key(body, MASTER_NAMESPACE))
    with httpx.stream(
        "POST",
        f"{front.url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ) as response:
        assert response.headers["x-edge-cache"] == "miss"
        first = next(line for line in response.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
    # The client left after the first chunk: the gateway cancels the upstream call.
    wait_until(
        lambda: fake_stats(stack.upstream_url)["cancelled"] > cancelled_before,
        "the upstream call to be cancelled",
    )
    # A stream of the same length, begun after the first one, run to its end and cached: past this,
    # the first stream would have ended (and been cached) too, had its upstream call gone on.
    control = unique(SHORT_STREAM)
    assert streamed_text(client.chat.completions.create(model=model, messages=control, stream=True))
    r = redis.Redis.from_url(stack.redis.url)
    control_key = keyspace.cache_entry(
        chat_cache_key({"model": model, "messages": control}, MASTER_NAMESPACE)
    )
    wait_until(lambda: r.exists(control_key), "the control stream's answer in L2")
    assert not r.exists(l2_key)
    raw = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert raw.headers["x-edge-cache"] == "miss"
    # The worker ended the job as cancelled (not by running the answer to its end).
    labels = {"provider": worker.provider, "status": "cancelled"}

    def cancelled_jobs() -> float:
        now = scrape(worker.metrics_url)
        return sample(now, "llm_edge_worker_jobs_total", **labels) - sample(
            jobs_before, "llm_edge_worker_jobs_total", **labels
        )

    assert wait_until(cancelled_jobs, "the worker to end the job as cancelled") == 1


def test_cache_replay_both_ways(client: openai.OpenAI) -> None:
    messages = unique()
    streamed = streamed_text(
        client.chat.completions.create(model="claude-sonnet-4-5", messages=messages, stream=True)
    )
    raw = client.chat.completions.with_raw_response.create(model="claude-sonnet-4-5", messages=messages)
    assert raw.headers["x-edge-cache"] == "hit-l1" and raw.parse().choices[0].message.content == streamed

    messages = unique()
    whole = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw.parse())
    assert raw.headers["x-edge-cache"] == "hit-l1"
    assert streamed_text(chunks) == whole.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == whole.usage.total_tokens

    with client.chat.completions.stream(model="gpt-4o-mini", messages=messages) as stream:
        assert stream.get_final_completion().choices[0].message.content == whole.choices[0].message.content


def test_replayed_tool_calls_keep_their_shape(client: openai.OpenAI) -> None:
    messages = unique("look it up")
    whole = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
    with client.chat.completions.stream(model="gpt-4o", messages=messages, tools=TOOLS) as stream:
        replayed = stream.get_final_completion()
    assert replayed.choices[0].message.tool_calls[0].function.arguments == (
        whole.choices[0].message.tool_calls[0].function.arguments
    )


def test_reply_streams_hold_nothing_once_delivered_and_expire(
    stack: DevStack, client: openai.OpenAI, front: Front
) -> None:
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    list(client.chat.completions.create(model="gpt-4o-mini", messages=unique(), stream=True))
    client.chat.completions.create(model="gpt-4o-mini", messages=unique())
    streams = list(r.scan_iter(keyspace.replies("*")))
    assert streams and all(0 < r.ttl(k) <= 3600 for k in streams)  # a dead front leaves no litter
    # Every chunk and answer was read, so the reader trimmed them: nothing waits in Redis.
    deadline = time.monotonic() + 10
    while any(r.xlen(k) for k in streams):
        assert time.monotonic() < deadline, {k: r.xlen(k) for k in streams}
        time.sleep(0.02)
    r.close()
