"""Pricing answers: genai-prices' numbers, fast; deployment overrides; unknown models; L2 cost."""

from __future__ import annotations

import logging
import socket
import time
import timeit

import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices import calc_price, data_snapshot
from genai_prices.data import providers

from shared import pricing
from shared.config import Deployment
from shared.costs import format_usd, fresh, l1_ttl_s, split_cost, split_entry, with_cost
from shared.pricing import cost_usd
from shared.wire import PromptTokensDetails, Usage


def usage(prompt: int, completion: int, read: int | None = None, written: int | None = None) -> Usage:
    details = PromptTokensDetails(cached_tokens=read, cache_write_tokens=written)
    return Usage(prompt, completion, prompt + completion, details)


def genai(provider: str, model: str, u: Usage) -> float:
    d = u.prompt_tokens_details
    assert isinstance(d, PromptTokensDetails)
    g = GenaiUsage(
        input_tokens=u.prompt_tokens,
        output_tokens=u.completion_tokens,
        cache_read_tokens=d.cached_tokens or None,
        cache_write_tokens=d.cache_write_tokens or None,
    )
    return float(calc_price(g, model, provider_id=provider).total_price)


def deployment(provider: str = "openai", model: str = "gpt-4o-mini", **kw: float) -> Deployment:
    return Deployment("m", provider, model, "http://x", "K", **kw)  # type: ignore[arg-type]


def test_known_models_cost_what_genai_prices_says() -> None:
    u = usage(1000, 100, read=200)
    want = genai("openai", "gpt-4o-mini", u)
    assert cost_usd("openai", "gpt-4o-mini", u, deployment()) == pytest.approx(want)
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output per million tokens.
    assert cost_usd("openai", "gpt-4o-mini", u, None) == pytest.approx((800 * 0.15 + 200 * 0.075 + 60) / 1e6)
    a = usage(5000, 300, read=3000, written=1000)
    claude = "claude-sonnet-4-5"
    assert cost_usd("anthropic", claude, a, None) == pytest.approx(genai("anthropic", claude, a))
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per million tokens.
    assert cost_usd("anthropic", claude, a, None) == pytest.approx(
        (1000 * 3 + 3000 * 0.3 + 1000 * 3.75 + 300 * 15) / 1e6
    )


USAGES = [usage(1, 1), usage(1234, 567, read=1000), usage(10_000, 10, read=2000, written=3000),
          usage(300_000, 1000, read=100_000, written=50_000), usage(0, 50)]  # fmt: skip


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_every_model_of_both_providers_matches_genai_prices(provider: str) -> None:
    """Tiers (prompts past 200k), cache-only rates, models without a cached rate: all of them."""
    [known] = [p for p in providers if p.id == provider]
    for model in known.models:
        for u in USAGES:
            try:
                want = genai(provider, model.id, u)
            except LookupError:  # an id its own match rules do not take ("ft:gpt-4o"): unknown here too
                want = 0.0
            assert cost_usd(provider, model.id, u, None) == pytest.approx(want, rel=1e-9, abs=1e-15), model.id


def test_cached_tokens_cost_the_cached_rate() -> None:
    plain = cost_usd("openai", "gpt-4o", usage(10_000, 0), None)
    cached = cost_usd("openai", "gpt-4o", usage(10_000, 0, read=10_000), None)
    assert plain == pytest.approx(10_000 * 2.5 / 1e6) and cached == pytest.approx(plain / 2)


def test_a_deployments_own_prices_win() -> None:
    d = deployment(input_cost_per_1m=1.0, output_cost_per_1m=2.0)
    assert cost_usd("openai", "gpt-4o-mini", usage(1000, 500, read=1000), d) == pytest.approx(0.002)
    only_output = deployment(output_cost_per_1m=4.0)
    assert cost_usd("openai", "gpt-4o-mini", usage(1000, 500), only_output) == pytest.approx(0.002)


def test_an_unknown_model_costs_nothing_and_is_named_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "edge.pricing")
    for _ in range(3):
        assert cost_usd("openai", "house-llama-70b", usage(1000, 1000), deployment()) == 0.0
    assert cost_usd("anthropic", "claude-nonexistent-9", usage(10, 10), None) == 0.0
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and "house-llama-70b" in warnings[0] and "claude-nonexistent-9" in warnings[1]
    assert cost_usd("openai", "gpt-4o-mini", None, None) == 0.0


def test_prices_come_from_the_wheel_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object) -> None:
        raise AssertionError("pricing tried to connect")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(pricing, "_rates", {})
    assert cost_usd("openai", "gpt-4.1", usage(100, 100), None) > 0
    assert not data_snapshot.get_snapshot().from_auto_update


def test_a_conditional_price_is_looked_up_again_after_a_while() -> None:
    pricing._rates.clear()
    cost_usd("anthropic", "claude-opus-4-6", usage(100, 100), None)  # a price with a start date
    cost_usd("openai", "gpt-4o-mini", usage(100, 100), None)
    conditional = pricing._rates[("anthropic", "claude-opus-4-6")]
    static = pricing._rates[("openai", "gpt-4o-mini")]
    assert conditional is not None and static is not None
    assert conditional.expires < float("inf") and static.expires == float("inf")


def test_pricing_an_answer_takes_microseconds() -> None:
    u = usage(1200, 300, read=1000)
    cost_usd("openai", "gpt-4o-mini", u, None)
    runs = 20_000
    per_call = timeit.timeit(lambda: cost_usd("openai", "gpt-4o-mini", u, None), number=runs) / runs
    assert per_call < 20e-6, f"{per_call * 1e6:.2f} µs"


def test_the_l2_entry_carries_the_cost_and_old_entries_still_read() -> None:
    completion = b'{"id":"c"}'
    assert split_cost(with_cost(0.000135, completion, 60)) == (completion, 0.000135)
    assert split_cost(completion) == (completion, 0.0)  # written before costs were stored
    assert split_cost(b"not json") == (b"not json", 0.0)
    assert split_cost(b"nan\n{}") == (b"nan\n{}", 0.0)
    # Entries carry their store time (ms) after the cost; those without one are still read.
    assert with_cost(0.5, completion, 60, stored=12.345) == b'0.5 12345 60\n{"id":"c"}'
    assert split_entry(with_cost(0.5, completion, 60, stored=12.345)) == (completion, 0.5, 12.345, 60)
    assert split_entry(b'0.5 12345\n{"id":"c"}') == (completion, 0.5, 12.345, 0)
    assert split_entry(b'0.5\n{"id":"c"}') == (completion, 0.5, 0.0, 0)
    assert split_entry(completion) == (completion, 0.0, 0.0, 0)
    assert split_entry(b"0.5 x\n{}") == (b"0.5 x\n{}", 0.0, 0.0, 0)
    assert fresh(with_cost(0, completion, 60, stored=100.0), 99.0) and fresh(completion, None)
    assert not fresh(with_cost(0, completion, 60, stored=100.0), 101.0) and not fresh(completion, 1.0)
    # L1 keeps a copy of an L2 entry no longer than L2 keeps it.
    left = l1_ttl_s(time.time() - 10, 60)
    assert left is not None and 49 < left <= 50 and l1_ttl_s(0.0, 60) is None and l1_ttl_s(5.0, 0) is None
    assert format_usd(0.000135) == b"0.000135" and format_usd(0.0) == b"0" and format_usd(1.5) == b"1.5"
    assert format_usd(0.00012345678901) == b"0.000123456789"
