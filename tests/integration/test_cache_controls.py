"""Cache controls end to end, with real fronts, a worker, the fake upstream and the openai SDK:
policy per model group and by default, Cache-Control (no-cache, no-store, max-age, s-maxage),
x-edge-cache-ttl, LiteLLM's body `cache` field, Age, /cache/stats, /cache/delete (every front's
L1 included) and `edge-agent cache warm`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis
from conftest import fake_stats, two_fronts

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace
from shared.cache_keys import chat_cache_key

MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
CONFIG = """
model_list:
  - {model_name: plain, provider: openai, model: gpt-4o-mini}
  - {model_name: det, provider: openai, model: gpt-4o-mini, cache: {mode: deterministic}}
  - model_name: never
    litellm_params: {model: openai/gpt-4o-mini}
    cache: {mode: off}
router_settings:
  cache: {mode: all, ttl: 1200}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    config = tmp_path_factory.mktemp("cache_controls") / "config.yaml"
    config.write_text(CONFIG)
    yield from two_fronts(
        tmp_path_factory, "cache_controls", 60, {"EDGE_CONFIG": str(config), "EDGE_CACHE_MAX_TTL": "300"}
    )


def fronts(stack: DevStack) -> tuple[Front, Front]:
    return stack.fronts  # type: ignore[attr-defined,no-any-return]


def sdk(front: Front, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0, timeout=60)


def messages(marker: str = "") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"cache controls {uuid.uuid4()} {marker}"}]


def ask(
    front: Front, model: str, msgs: list[dict[str, str]], key: str = MASTER_KEY, **kwargs: Any
) -> tuple[str, httpx.Headers]:
    """(x-edge-cache, all headers) of one non-streamed request."""
    raw = sdk(front, key).chat.completions.with_raw_response.create(model=model, messages=msgs, **kwargs)  # type: ignore[arg-type]
    raw.parse()
    return raw.headers["x-edge-cache"], raw.headers


def calls(stack: DevStack) -> int:
    return int(fake_stats(stack.upstream_url)["requests"])


def l2_ttl(stack: DevStack, body: dict[str, Any], namespace: str = "master") -> int:
    assert stack.redis is not None
    client = redis.Redis.from_url(stack.redis.url)
    try:
        return int(client.ttl(keyspace.cache_entry(chat_cache_key(body, namespace))))  # type: ignore[arg-type]
    finally:
        client.close()


def test_policy_per_group_and_by_default(stack: DevStack) -> None:
    a, _ = fronts(stack)
    # deterministic: temperature 1 (or none) is never cached, temperature 0 or a seed is.
    for kwargs in ({"temperature": 1}, {}):
        msgs = messages()
        before = calls(stack)
        assert [ask(a, "det", msgs, **kwargs)[0] for _ in range(2)] == ["miss", "miss"]
        assert calls(stack) == before + 2
        assert l2_ttl(stack, {"model": "det", "messages": msgs, **kwargs}) == -2  # nothing stored
    for kwargs in ({"temperature": 0}, {"temperature": 1, "seed": 7}):
        msgs = messages()
        assert [ask(a, "det", msgs, **kwargs)[0] for _ in range(2)] == ["miss", "hit-l1"]
    # off: never, whatever the request.
    msgs = messages()
    assert [ask(a, "never", msgs, temperature=0)[0] for _ in range(2)] == ["miss", "miss"]
    # The default (router_settings): every request, kept for its ttl.
    msgs = messages()
    assert [ask(a, "plain", msgs, temperature=1)[0] for _ in range(2)] == ["miss", "hit-l1"]
    assert 1100 < l2_ttl(stack, {"model": "plain", "messages": msgs, "temperature": 1}) <= 1200


def test_a_request_the_policy_does_not_cache_joins_no_flight(stack: DevStack) -> None:
    a, b = fronts(stack)
    msgs = messages("[[fake:delay_ms=800]]")

    async def both() -> list[str]:
        async def one(front: Front) -> str:
            client = openai.AsyncOpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model="det", messages=msgs, temperature=1
            )  # type: ignore[arg-type]
            return raw.headers["x-edge-cache"]

        return await asyncio.gather(one(a), one(b))

    before = calls(stack)
    assert asyncio.run(both()) == ["miss", "miss"]
    assert calls(stack) == before + 2


def test_max_age_and_the_age_header(stack: DevStack) -> None:
    a, b = fronts(stack)
    msgs = messages()
    tier, headers = ask(a, "plain", msgs)
    assert tier == "miss" and "age" not in headers
    time.sleep(2.2)
    tier, headers = ask(b, "plain", msgs)
    assert tier == "hit-l2" and 2 <= int(headers["age"]) <= 4
    tier, headers = ask(a, "plain", msgs)
    assert tier == "hit-l1" and 2 <= int(headers["age"]) <= 4
    # Too old for max-age=1 in L1 and in L2: asked upstream again (and stored anew).
    before = calls(stack)
    tier, headers = ask(a, "plain", msgs, extra_headers={"Cache-Control": "max-age=1"})
    assert tier == "miss" and calls(stack) == before + 1
    # Front b's L1 holds the old answer: too old, so the miss script's L2 lookup finds the new one.
    # (LiteLLM's body field s-maxage means the same as max-age.)
    tier, headers = ask(b, "plain", msgs, extra_body={"cache": {"s-maxage": 1}})
    assert tier == "hit-l2" and int(headers["age"]) <= 1
    assert calls(stack) == before + 1
    # no-store still looks (in L2 too, through the miss script): only the write is skipped.
    msgs = messages()
    assert ask(a, "plain", msgs)[0] == "miss"
    tier, headers = ask(b, "plain", msgs, extra_headers={"Cache-Control": "no-store"})
    assert tier == "hit-l2" and int(headers["age"]) <= 1
    # A streamed hit says its age too.
    with sdk(a).chat.completions.with_streaming_response.create(
        model="plain", messages=msgs, stream=True
    ) as raw:  # type: ignore[arg-type]
        assert raw.headers["x-edge-cache"] == "hit-l1" and int(raw.headers["age"]) <= 1


def test_s_maxage_and_x_edge_cache_ttl_set_the_l2_ttl(stack: DevStack) -> None:
    a, b = fronts(stack)
    for headers, body_field, expected in (
        ({"Cache-Control": "s-maxage=40"}, None, 40),
        ({"x-edge-cache-ttl": "50"}, None, 50),
        ({"Cache-Control": "s-maxage=100000"}, None, 300),  # bounded by EDGE_CACHE_MAX_TTL
        ({}, {"ttl": 70}, 70),
    ):
        msgs = messages()
        extra = {"extra_body": {"cache": body_field}} if body_field else {}
        assert ask(a, "plain", msgs, extra_headers=headers, **extra)[0] == "miss"
        assert expected - 10 < l2_ttl(stack, {"model": "plain", "messages": msgs}) <= expected
    # Another front's L1 copy of a short-lived entry lives no longer than the entry.
    msgs = messages()
    assert ask(a, "plain", msgs, extra_headers={"x-edge-cache-ttl": "2"})[0] == "miss"
    assert ask(b, "plain", msgs)[0] == "hit-l2"
    assert ask(b, "plain", msgs)[0] == "hit-l1"
    time.sleep(2.5)
    assert ask(b, "plain", msgs)[0] == "miss"
    with pytest.raises(openai.BadRequestError, match="x-edge-cache-ttl"):
        ask(a, "plain", messages(), extra_headers={"x-edge-cache-ttl": "soon"})


def test_litellm_body_field_is_honoured_not_forwarded_and_not_keyed(stack: DevStack) -> None:
    a, _ = fronts(stack)
    httpx.post(f"{stack.upstream_url}/_fake/reset", timeout=10)
    msgs = messages()
    assert ask(a, "plain", msgs, extra_body={"cache": {"no-store": True}})[0] == "miss"
    assert l2_ttl(stack, {"model": "plain", "messages": msgs}) == -2
    assert ask(a, "plain", msgs)[0] == "miss"  # nothing was stored: now it is
    # The field is not part of the key: the same request with any cache field finds the entry.
    assert ask(a, "plain", msgs, extra_body={"cache": {"ttl": 60}})[0] == "hit-l1"
    assert ask(a, "plain", msgs, extra_body={"cache": {"no-cache": True}})[0] == "miss"
    fields = fake_stats(stack.upstream_url)["by_field"]
    assert fields["messages"] == 3 and "cache" not in fields
    with pytest.raises(openai.BadRequestError) as e:
        ask(a, "plain", msgs, extra_body={"cache": "yes"})
    assert e.value.body["param"] == "cache"  # type: ignore[index]


def new_key(front: Front, namespace: str) -> str:
    answer = httpx.post(
        f"{front.url}/key/generate", json={"cache_namespace": namespace}, headers=MASTER, timeout=10
    )
    assert answer.status_code == 200, answer.text
    key: str = answer.json()["key"]
    return key


def test_cache_admin_is_for_the_master_key_only(stack: DevStack) -> None:
    a, b = fronts(stack)
    key = new_key(a, "admin-403")
    time.sleep(1)  # the other front learns the key
    for front in (a, b):
        headers = {"Authorization": f"Bearer {key}"}
        assert httpx.get(f"{front.url}/cache/stats", headers=headers).status_code == 403
        answer = httpx.post(f"{front.url}/cache/delete", json={"namespace": "master"}, headers=headers)
        assert answer.status_code == 403 and answer.json()["error"]["message"]
    assert httpx.get(f"{a.url}/cache/stats").status_code == 401


def test_cache_stats(stack: DevStack) -> None:
    a, _ = fronts(stack)
    for _ in range(3):
        msgs = messages()
        ask(a, "plain", msgs)
        ask(a, "plain", msgs)
    stats = httpx.get(f"{a.url}/cache/stats", headers=MASTER, timeout=10).json()
    assert stats["l1"]["entries"] >= 3 and stats["l1"]["bytes"] > 0
    l2 = stats["l2"]
    assert l2["redis_keys"] > 0 and l2["redis_used_memory_bytes"] > 0 and l2["sampled_keys"] > 0
    assert 0 < l2["estimated_entries"] <= l2["redis_keys"] and l2["estimated_bytes"] > 0
    tiers = stats["requests"]["tiers"]
    assert tiers["l1"]["hits"] >= 3 and tiers["l1"]["misses"] >= 3
    assert 0 < tiers["l1"]["hit_ratio"] < 1 and 0 < stats["requests"]["hit_ratio"] < 1
    assert httpx.post(f"{a.url}/cache/stats", headers=MASTER).status_code == 405


def cached_on_both(stack: DevStack, model: str, msgs: list[dict[str, str]], key: str = MASTER_KEY) -> None:
    a, b = fronts(stack)
    ask(a, model, msgs, key)
    assert ask(a, model, msgs, key)[0] == "hit-l1"
    assert ask(b, model, msgs, key)[0] in ("hit-l2", "hit-l1")
    assert ask(b, model, msgs, key)[0] == "hit-l1"


def delete(front: Front, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{front.url}/cache/delete", json=body, headers=MASTER, timeout=30)


def test_cache_delete_by_key_and_by_body_reaches_every_l1(stack: DevStack) -> None:
    a, b = fronts(stack)
    by_key, by_body = messages(), messages()
    cached_on_both(stack, "plain", by_key)
    cached_on_both(stack, "plain", by_body)
    key = chat_cache_key({"model": "plain", "messages": by_key}, "master")
    answer = delete(a, {"key": key})
    assert answer.status_code == 200 and answer.json() == {"deleted": 1, "keys": [key], "namespace": None}
    answer = delete(a, {"request": {"model": "plain", "messages": by_body, "cache": {"ttl": 5}}})
    assert answer.json()["deleted"] == 1
    time.sleep(1.0)  # fronts poll the deletions every 0.3 s: a second is the promise
    for msgs in (by_key, by_body):
        assert ask(b, "plain", msgs)[0] == "miss"  # gone from b's L1 and from L2
        assert ask(a, "plain", msgs)[0] == "hit-l2"  # gone from a's L1 too; b's miss stored it again
    assert delete(a, {"key": key})  # deleting what is not there is fine
    for bad in (
        {},
        {"key": "nope"},
        {"key": key, "keys": [key]},
        {"key": key, "namespace": "x"},
        {"what": 1},
    ):
        answer = delete(a, bad)
        assert answer.status_code == 400 and answer.json()["error"]["message"], bad
    answer = delete(a, {"request": {"model": "plain"}})
    assert answer.status_code == 400 and "messages" in answer.json()["error"]["message"]


def test_cache_delete_by_namespace(stack: DevStack) -> None:
    a, b = fronts(stack)
    key = new_key(a, "team-ns")
    time.sleep(1)
    team = [messages() for _ in range(3)]
    for msgs in team:
        cached_on_both(stack, "plain", msgs, key)
    mine = messages()
    cached_on_both(stack, "plain", mine)
    answer = delete(a, {"namespace": "key:team-ns"})
    assert answer.status_code == 200 and answer.json()["deleted"] == 3
    time.sleep(1.0)
    for msgs in team:
        assert ask(b, "plain", msgs, key)[0] == "miss"
    assert ask(b, "plain", mine)[0] == "hit-l1"  # another namespace: untouched


def warm(stack: DevStack, path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    a, _ = fronts(stack)
    env = {**stack.env, "EDGE_URL": a.url}  # the key comes from EDGE_MASTER_KEY
    command = [sys.executable, "-m", "edge_agent", "cache", "warm", str(path), *flags]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_cache_warm(stack: DevStack, tmp_path: Path) -> None:
    import json

    path = tmp_path / "warm.jsonl"
    lines = [json.dumps({"model": "plain", "messages": messages(), "stream": i % 2 == 0}) for i in range(6)]
    path.write_text("\n".join(lines) + "\n\n")
    first = warm(stack, path, "--concurrency", "3")
    assert first.returncode == 0, first.stderr
    assert "6 requests" in first.stdout and "0 hits, 6 misses, 0 errors" in first.stdout
    second = warm(stack, path)
    assert second.returncode == 0 and "6 hits, 0 misses, 0 errors" in second.stdout
    _, b = fronts(stack)
    assert ask(b, "plain", json.loads(lines[0])["messages"])[0] == "hit-l2"  # warm for every front
    path.write_text(lines[0] + "\nnot json\n" + json.dumps({"model": "nope", "messages": messages()}) + "\n")
    third = warm(stack, path, "--concurrency", "2")
    assert third.returncode == 1 and "1 hits, 0 misses, 2 errors" in third.stdout
    assert "line 2: not JSON" in third.stderr and "line 3: 404" in third.stderr


def test_an_entry_written_before_store_times_is_still_served(stack: DevStack) -> None:
    a, _ = fronts(stack)
    assert stack.redis is not None
    msgs = messages()
    completion = (
        b'{"id":"chatcmpl-old","object":"chat.completion","created":1,"model":"gpt-4o-mini",'
        b'"choices":[{"index":0,"message":{"role":"assistant","content":"old"},"finish_reason":"stop"}]}'
    )
    client = redis.Redis.from_url(stack.redis.url)
    try:
        entry = keyspace.cache_entry(chat_cache_key({"model": "plain", "messages": msgs}, "master"))
        client.set(entry, b"0.001\n" + completion, ex=60)  # the cost-only form: no store time
    finally:
        client.close()
    # Its age is unknown: no Age header, and too old for any max-age (the script's own test).
    before = calls(stack)
    tier, headers = ask(a, "plain", msgs, extra_headers={"Cache-Control": "max-age=3600"})
    assert tier == "miss" and calls(stack) == before + 1
    _, b = fronts(stack)
    other = messages()
    client = redis.Redis.from_url(stack.redis.url)
    try:
        entry = keyspace.cache_entry(chat_cache_key({"model": "plain", "messages": other}, "master"))
        client.set(entry, b"0.001\n" + completion, ex=60)
    finally:
        client.close()
    tier, headers = ask(b, "plain", other)
    assert tier == "hit-l2" and "age" not in headers


def test_the_messages_api_follows_the_same_controls(stack: DevStack) -> None:
    a, b = fronts(stack)
    key = new_key(a, "messages-ns")
    time.sleep(1)

    def ask_messages(
        front: Front, msgs: list[dict[str, str]], model: str = "plain", **kwargs: Any
    ) -> httpx.Headers:
        client = anthropic.Anthropic(base_url=front.url, api_key=key, max_retries=0)
        raw = client.messages.with_raw_response.create(model=model, max_tokens=100, messages=msgs, **kwargs)  # type: ignore[arg-type]
        raw.parse()
        return raw.headers

    msgs = messages()
    assert ask_messages(a, msgs)["x-edge-cache"] == "miss"
    hit = ask_messages(b, msgs, extra_headers={"Cache-Control": "max-age=60"})
    assert hit["x-edge-cache"] == "hit-l2" and int(hit["age"]) <= 1
    never = messages()
    assert [ask_messages(a, never, "never")["x-edge-cache"] for _ in range(2)] == ["miss", "miss"]
    answer = delete(a, {"namespace": "key:messages-ns"})
    assert answer.status_code == 200 and answer.json()["deleted"] == 1
    time.sleep(1.0)
    assert ask_messages(b, msgs)["x-edge-cache"] == "miss"  # gone from b's L1 and from L2
