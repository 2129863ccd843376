import time

from edge_front.l1 import L1Cache
from shared.cache_keys import chat_cache_key


def test_l1_evicts_least_recently_used_by_entries():
    cache = L1Cache(max_entries=2, max_bytes=1000, ttl_s=60)
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # a is now the most recent
    cache.set("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1" and cache.get("c") == b"3"


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


def test_cache_key_ignores_field_order_and_non_semantic_fields():
    a = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    b = {
        "temperature": 0,
        "stream": True,
        "user": "u1",
        "messages": [{"content": "hi", "role": "user"}],
        "model": "gpt-4o",
    }
    assert chat_cache_key(a) == chat_cache_key(b)


def test_cache_key_changes_with_anything_that_changes_the_answer():
    base = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    variants = [
        {**base, "model": "gpt-4o-mini"},
        {**base, "messages": [{"role": "user", "content": "hi!"}]},
        {**base, "temperature": 0.5},
        {**base, "seed": 1},
        {**base, "tools": [{"type": "function", "function": {"name": "f"}}]},
        {**base, "reasoning_effort": "high"},  # a field the gateway does not model still counts
    ]
    keys = {chat_cache_key(v) for v in variants} | {chat_cache_key(base)}
    assert len(keys) == len(variants) + 1


def test_cache_key_is_scoped():
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert chat_cache_key(body, "tenant-a") != chat_cache_key(body, "tenant-b")
