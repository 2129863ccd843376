"""What one answer cost, in USD, from the usage its upstream reported.

Prices come from the `genai-prices` wheel's bundled data (pinned in the lock files; it is never
told to fetch newer data, so pricing does no I/O), or from a deployment's own
`input_cost_per_1m` / `output_cost_per_1m` when it sets either. An unknown model costs 0 and
is logged once.

genai-prices' own `calc_price` takes ~200 µs (Decimal arithmetic, unit decomposition). Here a
model's prices are read from it once and kept as per-token floats, so pricing an answer is a
dict lookup and a few multiplications. The result matches `calc_price` for the four units an
OpenAI-shaped usage carries (input, output, cache read, cache write), tiers included
(tests/unit/test_pricing.py checks every OpenAI and Anthropic model it knows).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from decimal import Decimal

from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, TieredPrices

from shared.config import Deployment
from shared.wire import PromptTokensDetails, Usage

log = logging.getLogger("edge.pricing")

# The bundled price table (a 1.6 MB module) loads here, when the worker starts, not in the event
# loop on its first answer.
data_snapshot.get_snapshot()

# A price with a start date (or a time of day) is looked up again this often.
CONDITIONAL_RECHECK_S = 60.0

Rate = float | tuple[float, tuple[tuple[int, float], ...]]  # per token; or (base, ((above, rate), ...))


class _Rates:
    """One model's prices per token; None where genai-prices has no price for the unit."""

    __slots__ = ("cache_read", "cache_write", "expires", "input", "output")

    def __init__(self, price: ModelPrice, expires: float) -> None:
        self.input = _rate(price.input_mtok)
        self.output = _rate(price.output_mtok)
        self.cache_read = _rate(price.cache_read_mtok)
        self.cache_write = _rate(price.cache_write_mtok)
        self.expires = expires


def _rate(price: Decimal | TieredPrices | None) -> Rate | None:
    if price is None:
        return None
    if isinstance(price, TieredPrices):
        tiers = tuple((t.start, float(t.price) / 1e6) for t in reversed(price.tiers))
        return float(price.base) / 1e6, tiers
    return float(price) / 1e6


def _at(rate: Rate, total_input: int) -> float:
    """A rate's per-token price for an answer whose prompt had `total_input` tokens. A tier
    applies to every token once the prompt is past its start, as genai-prices has it."""
    if isinstance(rate, float):
        return rate
    base, tiers = rate
    for start, price in tiers:  # highest first
        if total_input > start:
            return price
    return base


# (provider, upstream model) -> its rates, or None for a model genai-prices does not know.
_rates: dict[tuple[str, str], _Rates | None] = {}


def _lookup(provider: str, model: str, now: float) -> _Rates | None:
    key = (provider, model)
    rates = _rates.get(key)
    if rates is not None and rates.expires > now:
        return rates
    if rates is None and key in _rates:
        return None  # unknown, and already said so
    found = _resolve(provider, model, now)
    if found is None:
        log.warning("no price known for %s model %r: its answers are counted as costing 0", provider, model)
    _rates[key] = found
    return found


# The gateway's provider names where genai-prices names them otherwise.
_PRICE_PROVIDERS = {"bedrock": "aws"}


def _resolve(provider: str, model: str, now: float) -> _Rates | None:
    priced_as = _PRICE_PROVIDERS.get(provider, provider)
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, priced_as, None)
    except LookupError:
        return None
    if isinstance(info.prices, ModelPrice):
        return _Rates(info.prices, float("inf"))
    return _Rates(_current(info, now), now + CONDITIONAL_RECHECK_S)


def _current(info: ModelInfo, now: float) -> ModelPrice:
    return info.get_prices(datetime.fromtimestamp(now, UTC))


def cost_usd(provider: str, upstream_model: str, usage: Usage | None, deployment: Deployment | None) -> float:
    """The answer's price. Tokens read from the prompt cache are billed at the cached rate (the
    input rate where the model has none, or under a deployment's own prices)."""
    if usage is None:
        return 0.0
    prompt, completion = usage.prompt_tokens, usage.completion_tokens
    if deployment is not None and (deployment.input_cost_per_1m or deployment.output_cost_per_1m):
        return (prompt * deployment.input_cost_per_1m + completion * deployment.output_cost_per_1m) / 1e6
    rates = _lookup(provider, upstream_model, time.time())
    if rates is None:
        return 0.0
    details = usage.prompt_tokens_details
    read = written = 0
    if isinstance(details, PromptTokensDetails):
        read, written = details.cached_tokens or 0, details.cache_write_tokens or 0
    cost = 0.0
    plain = prompt
    if rates.cache_read is not None and read:
        cost += read * _at(rates.cache_read, prompt)
        plain -= read
    if rates.cache_write is not None and written:
        cost += written * _at(rates.cache_write, prompt)
        plain -= written
    if rates.input is not None:
        cost += max(plain, 0) * _at(rates.input, prompt)
    if rates.output is not None:
        cost += completion * _at(rates.output, prompt)
    return cost
