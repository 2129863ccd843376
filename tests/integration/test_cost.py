"""What answers cost, through the gateway with the official SDK: the x-edge-cost-usd header, the
worker's cost counter, the front's cache-savings counter, the cost stored with the L2 entry and
the SSE comment that ends a stream."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest
import redis
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_front.keys import MASTER_NAMESPACE
from shared import keyspace
from shared.cache_keys import chat_cache_key
from shared.costs import split_cost
from tests.integration.conftest import sample, scrape, wait_until

PROVIDER = {"gpt-4o-mini": "openai", "claude-sonnet-4-5": "anthropic"}


def l2_key(request: dict[str, object]) -> str:
    """Where the master key's answer to `request` is kept in L2."""
    return keyspace.cache_entry(chat_cache_key(request, MASTER_NAMESPACE))


def unique(text: str = "what does it cost") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def price(provider: str, model: str, prompt: int, completion: int) -> float:
    usage = GenaiUsage(input_tokens=prompt, output_tokens=completion)
    return float(calc_price(usage, model, provider_id=provider).total_price)


@pytest.mark.parametrize("model", list(PROVIDER))
def test_a_miss_carries_its_price_and_a_hit_its_saving(
    client: openai.OpenAI, front: Front, workers: dict[str, Worker], stack: DevStack, model: str
) -> None:
    provider = PROVIDER[model]
    front_metrics, worker_metrics = f"{front.url}/metrics", workers[provider].metrics_url
    front_before, worker_before = scrape(front_metrics), scrape(worker_metrics)
    messages = unique()
    miss = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    completion = miss.parse()
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    want = price(provider, model, completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert want > 0
    assert miss.headers["x-edge-cache"] == "miss"
    assert float(miss.headers["x-edge-cost-usd"]) == pytest.approx(want, rel=1e-6)

    hit = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert hit.headers["x-edge-cache"] == "hit-l1" and hit.headers["x-edge-cost-usd"] == "0"
    front_after, worker_after = scrape(front_metrics), scrape(worker_metrics)
    cost = ("llm_edge_cost_usd_total", {"provider": provider, "model": model})
    moved = sample(worker_after, cost[0], **cost[1]) - sample(worker_before, cost[0], **cost[1])
    assert moved == pytest.approx(want, rel=1e-9)
    saved = sample(front_after, "llm_edge_cache_savings_usd_total") - sample(
        front_before, "llm_edge_cache_savings_usd_total"
    )
    assert saved == pytest.approx(want, rel=1e-9)

    # The worker stored the cost (and when, and for how long) in front of the completion, in the
    # same SET as before.
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    entry = r.get(l2_key({"model": model, "messages": messages}))
    assert entry is not None
    body, stored_cost = split_cost(entry)
    assert stored_cost == pytest.approx(want, rel=1e-9) and body.startswith(b"{")


def test_an_l2_hit_saves_what_its_entry_says_and_an_old_entry_still_serves(
    client: openai.OpenAI, front: Front, stack: DevStack
) -> None:
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    completion = (
        b'{"id":"chatcmpl-planted","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"from L2"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}'
    )
    for stored, saving in ((b"0.25\n" + completion, 0.25), (completion, 0.0)):  # new, then old format
        messages = unique()
        r.set(
            keyspace.cache_entry(
                chat_cache_key({"model": "gpt-4o-mini", "messages": messages}, MASTER_NAMESPACE)
            ),
            stored,
        )
        before = scrape(f"{front.url}/metrics")
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
        after = scrape(f"{front.url}/metrics")
        assert raw.headers["x-edge-cache"] == "hit-l2" and raw.headers["x-edge-cost-usd"] == "0"
        assert raw.parse().choices[0].message.content == "from L2"
        name = "llm_edge_cache_savings_usd_total"
        assert sample(after, name) - sample(before, name) == pytest.approx(saving)


@pytest.mark.parametrize("model", list(PROVIDER))
def test_a_stream_ends_with_its_cost_in_a_comment_the_sdk_skips(
    client: openai.OpenAI, front: Front, stack: DevStack, model: str
) -> None:
    messages = unique()
    chunks = list(
        client.chat.completions.create(
            model=model, messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    usage = chunks[-1].usage
    assert usage is not None and "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    want = price(PROVIDER[model], model, usage.prompt_tokens, usage.completion_tokens)
    # The same request again, uncached, read raw: the comment comes right before [DONE].
    with httpx.stream(
        "POST",
        f"{front.url}/v1/chat/completions",
        json={"model": model, "messages": messages, "stream": True},
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Cache-Control": "no-cache, no-store"},
        timeout=30,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert response.headers["x-edge-cache"] == "miss" and "x-edge-cost-usd" not in response.headers
    assert lines[-1] == "data: [DONE]" and lines[-2].startswith(": x-edge-cost-usd=")
    assert float(lines[-2].partition("=")[2]) == pytest.approx(want, rel=1e-6)
    # The first stream's answer was cached with its cost: a hit says 0 in its headers.
    assert stack.redis is not None
    key = l2_key({"model": model, "messages": messages})
    r = redis.Redis.from_url(stack.redis.url)
    wait_until(lambda: r.exists(key), "the streamed answer in L2")
    hit = client.chat.completions.with_raw_response.create(model=model, messages=messages)
    assert hit.headers["x-edge-cache"] == "hit-l1" and hit.headers["x-edge-cost-usd"] == "0"
