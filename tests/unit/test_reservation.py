"""What a virtual key's request reserves: tokens counted with tiktoken's cl100k_base (loaded from
the wheel, never downloaded), and their worst-case cost."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import msgspec
import pytest

from edge_front.reservation import (
    IMAGE_HIGH,
    IMAGE_LOW,
    PER_MESSAGE,
    PRIMING,
    TokenEstimator,
    completion_tokens,
    worst_case_usd,
)
from shared.config import Deployment
from shared.wire import ChatCompletionRequest


@pytest.fixture(scope="module")
def no_network() -> Iterator[None]:
    """Loading the encoding must not touch the network (tiktoken's default is to download it)."""
    real = socket.socket.connect

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the token estimator tried to reach the network")

    socket.socket.connect = refuse  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        socket.socket.connect = real  # type: ignore[method-assign]


@pytest.fixture(scope="module")
async def estimator(no_network: None) -> TokenEstimator:
    loaded = TokenEstimator()
    await loaded.ready()
    return loaded


def chat(**fields: object) -> ChatCompletionRequest:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello world"}], **fields}
    return msgspec.convert(body, ChatCompletionRequest)


async def test_text_is_counted_with_cl100k(estimator: TokenEstimator) -> None:
    assert estimator.text("hello world") == 2  # cl100k_base: "hello", " world"
    assert estimator.text("tiktoken is great!") == 6
    assert estimator.prompt(chat()) == PRIMING + PER_MESSAGE + 2


async def test_every_kind_of_content_counts(estimator: TokenEstimator) -> None:
    parts = [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/b.png"}},
        {"type": "input_audio", "input_audio": {"data": "A" * 160, "format": "wav"}},
    ]
    messages = [
        {"role": "system", "content": "hello world"},
        {"role": "user", "content": parts},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    counted = estimator.prompt(chat(messages=messages))
    calls = estimator.text("f") + estimator.text("{}")
    assert counted == PRIMING + 3 * PER_MESSAGE + 2 + 2 + IMAGE_LOW + IMAGE_HIGH + 10 + calls
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert estimator.prompt(chat(tools=tools)) > estimator.prompt(chat())


async def test_a_huge_text_is_extrapolated_from_its_prefix(estimator: TokenEstimator) -> None:
    text = "lorem ipsum dolor sit amet " * 20_000  # 540,000 characters
    exact = estimator.text("lorem ipsum dolor sit amet " * 1000) * 20
    assert abs(estimator.text(text) - exact) / exact < 0.01


def test_the_completion_is_the_clients_cap_or_the_default_per_choice() -> None:
    assert completion_tokens(chat(), 4096) == 4096
    assert completion_tokens(chat(max_tokens=100), 4096) == 100
    assert completion_tokens(chat(max_tokens=100, max_completion_tokens=50, n=3), 4096) == 150


async def test_the_worst_case_prices_prompt_and_completion(estimator: TokenEstimator) -> None:
    own = Deployment(
        model_name="m",
        provider="openai",
        model="m",
        base_url="http://u",
        api_key_env="K",
        input_cost_per_1m=2.0,
        output_cost_per_1m=8.0,
    )
    assert worst_case_usd(own, "m", 1_000_000, 500_000) == pytest.approx(2.0 + 4.0)
    listed = Deployment(
        model_name="gpt-4o-mini", provider="openai", model="gpt-4o-mini", base_url="http://u", api_key_env="K"
    )
    assert worst_case_usd(listed, "gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.15 + 0.60)
    assert worst_case_usd(listed, "no-such-model-xyz", 1000, 1000) == 0.0  # unknown: costs 0
