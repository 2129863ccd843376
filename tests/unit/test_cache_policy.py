"""The cache decision: policy modes, Cache-Control, x-edge-cache-ttl and LiteLLM's body field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from shared.cache_keys import chat_cache_key
from shared.cache_policy import (
    ALL,
    DEFAULT_POLICY,
    NONE,
    CacheDecision,
    CachePolicy,
    decide,
    strip_body_field,
)
from shared.config import read_config
from shared.config_error import ConfigError
from shared.errors import EdgeError

MAX = 600
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def d(
    policy: CachePolicy = DEFAULT_POLICY,
    headers: dict[bytes, bytes] | None = None,
    field: Any = None,
    **body: Any,
) -> CacheDecision:
    return decide(policy, {**CHAT, **body}, headers or {}, field, MAX)


def test_nothing_asked_is_the_shared_default() -> None:
    assert d() is ALL


def test_policy_modes() -> None:
    assert d(CachePolicy("off"), temperature=0) == NONE
    det = CachePolicy("deterministic")
    assert d(det) == NONE and d(det, temperature=1) == NONE and d(det, temperature=0.7) == NONE
    assert d(det, temperature=0).lookup and d(det, temperature=0.0).store and d(det, seed=7).lookup
    assert d(det, temperature=1, seed=0).store  # a seed makes it reproducible whatever the temperature
    assert decide(det, {"model": "e", "input": "x"}, {}, None, MAX, sampled=False) == ALL  # embeddings
    assert d(CachePolicy(ttl=30)).ttl_s == 30
    # A policy that does not cache wins over anything the request asks.
    assert d(CachePolicy("off"), {b"cache-control": b"max-age=5"}) == NONE


def test_cache_control() -> None:
    assert d(headers={b"cache-control": b"no-cache"}) == CacheDecision(lookup=False)
    assert d(headers={b"cache-control": b"No-Store"}) == CacheDecision(store=False)
    both = d(headers={b"cache-control": b"no-cache, no-store"})
    assert not both.lookup and not both.store
    assert d(headers={b"cache-control": b"max-age=30, s-maxage=120"}) == CacheDecision(
        max_age_s=30, ttl_s=120
    )
    assert d(headers={b"cache-control": b"s-maxage=99999"}).ttl_s == MAX  # bounded
    assert d(headers={b"x-edge-cache-ttl": b"45"}).ttl_s == 45
    assert d(CachePolicy(ttl=30), {b"x-edge-cache-ttl": b"45"}).ttl_s == 45  # the request's wins
    assert d(headers={b"cache-control": b"private, must-revalidate"}) == ALL  # others ignored
    for bad in (b"max-age=-1", b"max-age=x", b"s-maxage=0", b"max-age=nan"):
        with pytest.raises(EdgeError) as e:
            d(headers={b"cache-control": bad})
        assert e.value.status == 400
    with pytest.raises(EdgeError):
        d(headers={b"x-edge-cache-ttl": b"soon"})


def test_litellm_body_field() -> None:
    assert d(field={"no-cache": True}) == CacheDecision(lookup=False)
    assert d(field={"no-store": True}) == CacheDecision(store=False)
    # LiteLLM's s-maxage is the age it accepts (HTTP's max-age); ttl is how long to store.
    assert d(field={"s-maxage": 10, "ttl": 60}) == CacheDecision(max_age_s=10, ttl_s=60)
    assert d(field={"ttl": 10**9}).ttl_s == MAX
    for bad in ("yes", {"ttl": "x"}, {"ttl": True}, {"s-maxage": -1}):
        with pytest.raises(EdgeError) as e:
            d(field=bad)
        assert e.value.status == 400 and e.value.param


def test_the_body_field_leaves_the_body_and_the_key() -> None:
    body = msgspec.json.encode({**CHAT, "cache": {"no-store": True}})
    raw = msgspec.json.decode(body)
    field, sent = strip_body_field(raw, body)
    assert field == {"no-store": True} and "cache" not in msgspec.json.decode(sent)
    assert chat_cache_key(raw, "ns") == chat_cache_key(dict(CHAT), "ns")
    plain = msgspec.json.encode(CHAT)
    assert strip_body_field(msgspec.json.decode(plain), plain) == (None, plain)  # same bytes: no copy


def test_config_cache_per_group_and_default(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        """
model_list:
  - model_name: fresh
    litellm_params: {model: openai/gpt-4o-mini}
    cache: {mode: deterministic, ttl: 60}
  - model_name: plain
    provider: openai
    cache: {mode: off}
  - model_name: other
    provider: openai
router_settings:
  cache: {mode: all, ttl: 120}
"""
    )
    from shared.config import ModelTable

    loaded = read_config(str(config), {})
    table = ModelTable(loaded.deployments, {}, by_prefix=False, router=loaded.router)
    assert table.cache_policy("fresh") == CachePolicy("deterministic", 60)
    assert table.cache_policy("plain") == CachePolicy("off")
    assert table.cache_policy("other") == CachePolicy("all", 120)
    assert not loaded.warnings
    for bad in ("sometimes", "on", "all, ttl: 0"):
        config.write_text(f"model_list: [{{model_name: a, provider: openai, cache: {{mode: {bad}}}}}]\n")
        with pytest.raises(ConfigError, match="cache") as e:
            read_config(str(config), {})
        assert bad != "sometimes" or "valid: all, deterministic, off" in str(e.value)
    config.write_text(
        "model_list: [{model_name: a, provider: openai, cache: {mode: 'off'}},"
        " {model_name: a, provider: openai, cache: {mode: all}}]\n"
    )
    with pytest.raises(ConfigError, match="differs"):
        read_config(str(config), {})
