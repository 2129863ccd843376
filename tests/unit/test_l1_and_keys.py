import copy
import json
import time
from typing import Any

import pytest

from edge_front.keys import MASTER_NAMESPACE
from edge_front.l1 import L1Cache
from shared.cache_keys import chat_cache_key


def test_l1_evicts_least_recently_used_by_entries():
    cache = L1Cache(max_entries=2, max_bytes=1000, ttl_s=60)
    cache.set("a", b"1", stored=5.0)
    cache.set("b", b"2")
    assert cache.get("a") == (b"1", 0.0, 5.0)  # a is now the most recent
    cache.set("c", b"3", 0.25, stored=7.0)
    assert cache.get("b") is None
    assert cache.get("a") == (b"1", 0.0, 5.0) and cache.get("c") == (b"3", 0.25, 7.0)


def test_l1_keeps_when_stored_and_a_shorter_ttl_of_its_own():
    cache = L1Cache(max_entries=10, max_bytes=1000, ttl_s=60)
    before = time.time()
    cache.set("a", b"1")
    entry = cache.get("a")
    assert entry is not None and before <= entry[2] <= time.time()
    cache.set("short", b"1", ttl_s=0.01)
    cache.set("long", b"1", ttl_s=3600)  # never longer than L1's own
    time.sleep(0.02)
    assert cache.get("short") is None and cache.get("long") is not None


def test_l1_drops_a_namespace_or_everything():
    cache = L1Cache(max_entries=10, max_bytes=1000, ttl_s=60)
    for key in ("v1:master:a", "v1:master:b", "v1:key:t:a"):
        cache.set(key, b"12")
    assert cache.delete_prefix("v1:master:") == 2
    assert len(cache) == 1 and cache.bytes == 2 and cache.get("v1:key:t:a") is not None
    assert cache.delete("v1:key:t:a") and not cache.delete("v1:key:t:a")
    cache.set("x", b"1")
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def test_l1_bounded_by_bytes_and_skips_oversized_values():
    cache = L1Cache(max_entries=100, max_bytes=10, ttl_s=60)
    cache.set("a", b"12345")
    cache.set("b", b"12345")
    cache.set("c", b"12345")
    assert cache.get("a") is None and len(cache) == 2 and cache.bytes == 10
    cache.set("huge", b"x" * 11)
    assert cache.get("huge") is None and cache.bytes == 10


def test_l1_entries_expire():
    cache = L1Cache(max_entries=10, max_bytes=1000, ttl_s=0.01)
    cache.set("a", b"1")
    time.sleep(0.02)
    assert cache.get("a") is None and cache.bytes == 0


def test_l1_replacing_a_key_keeps_byte_count_right():
    cache = L1Cache(max_entries=10, max_bytes=1000, ttl_s=60)
    cache.set("a", b"123")
    cache.set("a", b"12")
    assert cache.bytes == 2 and len(cache) == 1


BASE: dict[str, Any] = {
    "model": "gpt-4o",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
    ],
    "temperature": 0,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
}


def reordered(value: Any) -> Any:
    """The same JSON value with every object's keys in reverse order."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def test_cache_key_is_the_same_whatever_the_json_key_order_at_any_depth() -> None:
    # As production calls it: the decoded request body, nothing else.
    twin = json.loads(json.dumps(reordered(BASE)))
    assert list(twin) != list(BASE) and list(twin["tools"][0]) != list(BASE["tools"][0])
    assert chat_cache_key(twin, MASTER_NAMESPACE) == chat_cache_key(BASE, MASTER_NAMESPACE)
    assert chat_cache_key(copy.deepcopy(BASE), MASTER_NAMESPACE) == chat_cache_key(
        BASE, MASTER_NAMESPACE
    )  # and deterministic


@pytest.mark.parametrize(
    "extra",
    [
        {"stream": True},
        {"stream": False},
        {"stream_options": {"include_usage": True}},
        {"user": "u1"},
        {"metadata": {"team": "a"}},
        {"store": True},
        {"temperature": 0, "seed": None},  # a null field is the field left out
        {"stream": True, "stream_options": {"include_usage": True}, "user": "u2", "store": False},
    ],
)
def test_cache_key_ignores_what_cannot_change_the_answer(extra: dict[str, Any]) -> None:
    assert chat_cache_key({**BASE, **extra}, MASTER_NAMESPACE) == chat_cache_key(BASE, MASTER_NAMESPACE)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o-mini"},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": [BASE["messages"][0], {"role": "user", "content": [{"type": "text", "text": "hi!"}]}]},
        {"messages": list(reversed(BASE["messages"]))},
        {"temperature": 0.5},
        {"temperature": None},
        {"top_p": 0.9},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"n": 2},
        {"seed": 1},
        {"stop": ["\n"]},
        {"tools": [{"type": "function", "function": {"name": "g", "parameters": {"type": "object"}}}]},
        {"tools": None},
        {"tool_choice": "required"},
        {"parallel_tool_calls": False},
        {"response_format": {"type": "json_object"}},
        {"logprobs": True},
        {"presence_penalty": 1},
        {"frequency_penalty": 1},
        {"logit_bias": {"50256": -100}},
        {"reasoning_effort": "high"},  # a field the gateway does not model still counts
    ],
)
def test_cache_key_changes_with_anything_that_changes_the_answer(change: dict[str, Any]) -> None:
    assert chat_cache_key({**BASE, **change}, MASTER_NAMESPACE) != chat_cache_key(BASE, MASTER_NAMESPACE)
