"""Structured output and logprobs through the gateway, against the fake upstream, with the SDK."""

from __future__ import annotations

import uuid

import openai
import pytest
from pydantic import BaseModel


class Step(BaseModel):
    explanation: str
    output: int


class Solution(BaseModel):
    steps: list[Step]
    final_answer: str
    confident: bool


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5"])
def test_parse_answers_an_instance_of_the_model(client: openai.OpenAI, model: str) -> None:
    # Anthropic has no JSON mode: the gateway forces a tool whose input schema is the model's.
    completion = client.chat.completions.parse(
        model=model,
        messages=[{"role": "user", "content": f"Solve 8x + 7 = -23 ({model})"}],
        response_format=Solution,
    )
    solution = completion.choices[0].message.parsed
    assert isinstance(solution, Solution) and solution.steps


def test_logprobs_come_back_streamed_and_not(client: openai.OpenAI) -> None:
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "logprobs through the gateway"}]}
    answer = client.chat.completions.create(**ask, logprobs=True, top_logprobs=2)  # type: ignore[call-overload]
    entries = answer.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == answer.choices[0].message.content
    assert all(len(e.top_logprobs) == 2 for e in entries)
    stream = client.chat.completions.create(  # type: ignore[call-overload]
        **ask, logprobs=True, top_logprobs=2, stream=True, extra_headers={"Cache-Control": "no-cache"}
    )
    tokens = [
        entry.token
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]
    assert tokens == [e.token for e in entries]


def _streamed_tokens(stream) -> list[str]:  # type: ignore[no-untyped-def]
    return [
        entry.token
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]


def test_logprobs_survive_the_cache_whichever_way_the_answer_was_asked_for(client: openai.OpenAI) -> None:
    streamed_first = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    live = _streamed_tokens(client.chat.completions.create(**streamed_first, logprobs=True, stream=True))  # type: ignore[call-overload]
    hit = client.chat.completions.with_raw_response.create(**streamed_first, logprobs=True)  # type: ignore[call-overload]
    assert hit.headers["x-edge-cache"].startswith("hit") and live
    assert [e.token for e in hit.parse().choices[0].logprobs.content] == live

    whole_first = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": uuid.uuid4().hex}]}
    answer = client.chat.completions.create(**whole_first, logprobs=True)  # type: ignore[call-overload]
    replayed = client.chat.completions.with_raw_response.create(**whole_first, logprobs=True, stream=True)  # type: ignore[call-overload]
    assert replayed.headers["x-edge-cache"].startswith("hit")
    assert _streamed_tokens(replayed.parse()) == [e.token for e in answer.choices[0].logprobs.content]
