"""The semantic cache's parts that need no model: guard, index, eligibility, partition, config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_workers.semantic.cache import last_user_text, partition_of
from edge_workers.semantic.guard import agree, encode_features, features
from edge_workers.semantic.index import Entry, Index
from shared.config import ConfigError, load_settings
from shared.semantic_config import SemanticSettings

ON = SemanticSettings()


def ok(a: str, b: str) -> bool:
    return agree(features(a), features(b)) and agree(features(b), features(a))


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What's 15 percent of 80?", "What is 15 percent of 80?"),
        ("Which mountain is the tallest in the world?", "What is the tallest mountain in the world?"),
        ("List three benefits of exercise.", "Name three benefits of exercise."),
        ("How many legs does a spider have?", "How many legs do spiders have?"),
        (
            "At sea level, what is the boiling point of water?",
            "What is the boiling point of water at sea level?",
        ),
    ],
)
def test_guard_lets_paraphrases_through(a: str, b: str) -> None:
    assert ok(a, b)


@pytest.mark.parametrize(
    ("a", "b", "why"),
    [
        ("Subtract 5 from 12.", "Subtract 12 from 5.", "number order"),
        ("List three benefits.", "List five benefits.", "number word"),
        ("What is 15 percent of 80?", "What is 15 percent of 90?", "number"),
        ("Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?", "negation"),
        ("Why is the sky blue?", "Why isn't the sky blue?", "contracted negation"),
        ("Bread with yeast", "Bread without yeast", "without"),
        ("Weather in London today", "Weather in London tomorrow", "day"),
        ("Convert 100 USD to EUR.", "Convert 100 EUR to USD.", "entity order"),
        ("Install Docker on Ubuntu", "Install Docker on Windows", "entity"),
        ("Does the cat chase the dog?", "Does the dog chase the cat?", "word order"),
        ("What should I eat before a workout?", "What should I eat after a workout?", "direction"),
    ],
)
def test_guard_refuses_near_misses(a: str, b: str, why: str) -> None:
    assert not ok(a, b), why


def test_features_keep_no_text() -> None:
    f = features("Send 250 EUR to Alice tomorrow, not Bob")
    assert all(isinstance(h, int) for h in (*f.numbers, *f.entities, *f.terms, *f.content))
    assert f.negations == 1 and len(f.numbers) == 1 and len(f.entities) == 3  # EUR, Alice, Bob


def _unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def _entry(key: str, expires_ms: int = 10**15) -> Entry:
    return Entry(key, encode_features(features(key)), expires_ms, "req")


def test_index_searches_its_partition_only_and_bounds_itself() -> None:
    index = Index(max_vectors=3)
    a, b = _unit(1), _unit(2)
    index.add(b"p1", a, _entry("k1"))
    index.add(b"p2", a, _entry("k2"))
    assert [e.cache_key for _, e in index.search(b"p1", a, 0.99)] == ["k1"]
    assert index.search(b"p3", a, 0.1) == []
    index.add(b"p1", b, _entry("k3"))
    index.add(b"p1", b, _entry("k3"))  # the same answer again replaces, not duplicates
    assert index.count == 3
    index.add(b"p1", _unit(3), _entry("k4"))  # over the bound: the oldest (k1) goes
    assert index.count == 3
    assert [e.cache_key for _, e in index.search(b"p1", a, 0.99)] == []
    index.remove(b"p1", "k3")
    assert [e.cache_key for _, e in index.search(b"p1", b, 0.99)] == []
    assert index.count == 2


def test_index_forgets_expired_vectors() -> None:
    index = Index(max_vectors=10)
    index.add(b"p", _unit(1), _entry("old", expires_ms=1000))
    index.add(b"p", _unit(2), _entry("new", expires_ms=5000))
    index.expire(now_ms=2000)
    assert index.count == 1
    assert index.search(b"p", _unit(2), 0.99)[0][1].cache_key == "new"


def body(**fields: object) -> dict[str, object]:
    return {
        "model": "m",
        "temperature": 0,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
        **fields,
    }


def test_only_deterministic_single_text_requests_are_eligible() -> None:
    assert last_user_text(body(), ON) == "Hello there"
    parts = [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]
    assert last_user_text(body(messages=[{"role": "user", "content": parts}]), ON) == "Hello\nthere"
    image = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    assert last_user_text(body(messages=[{"role": "user", "content": image}]), ON) is None
    assert last_user_text(body(temperature=0.7), ON) is None
    assert last_user_text(body(temperature=None), ON) is None  # OpenAI's default is 1
    assert last_user_text(body(temperature=None), SemanticSettings(default_temperature=0)) == "Hello there"
    assert last_user_text(body(n=2), ON) is None
    assert last_user_text(body(tools=[{"type": "function", "function": {"name": "f"}}]), ON) is None
    assert last_user_text(body(messages=[{"role": "assistant", "content": "Hi"}]), ON) is None
    assert last_user_text(body(), SemanticSettings(max_chars=5)) is None


def test_partition_is_the_exact_context_without_the_last_message_text() -> None:
    base = partition_of(body(), "ns")
    reworded = body(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}])
    assert partition_of(reworded, "ns") == base
    assert partition_of(body(stream=True, user="u"), "ns") == base  # as the exact cache key ignores them
    assert partition_of(body(), "other") != base  # tenants never share
    assert partition_of(body(model="n"), "ns") != base
    assert partition_of(body(max_tokens=5), "ns") != base
    other_system = [{"role": "system", "content": "Be long."}, {"role": "user", "content": "Hello there"}]
    assert partition_of(body(messages=other_system), "ns") != base


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_per_group_router_default_and_litellm_form(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        """
model_list:
  - {model_name: a, provider: openai, semantic_cache: {threshold: 0.93, mode: shadow}}
  - {model_name: a, provider: openai, model: other}
  - {model_name: b, provider: anthropic}
  - model_name: c
    litellm_params: {model: openai/gpt-4o}
    semantic_cache: {threshold: 0.95}
router_settings:
  semantic_cache: {threshold: 0.9}
""",
    )
    _, models = load_settings({"EDGE_CONFIG": str(path)})
    assert models.semantic["a"] == SemanticSettings(threshold=0.93, mode="shadow")
    assert models.semantic["b"] == SemanticSettings(threshold=0.9)
    assert models.semantic["c"] == SemanticSettings(threshold=0.95)


def test_config_off_unless_configured(tmp_path: Path) -> None:
    _, models = load_settings(
        {"EDGE_CONFIG": str(_config(tmp_path, "model_list: [{model_name: a, provider: openai}]"))}
    )
    assert models.semantic == {}
    _, models = load_settings({})
    assert models.semantic == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "model_list: [{model_name: a, provider: openai, semantic_cache: {threshold: 1.5}}]",
            "model_list[0].semantic_cache.threshold",
        ),
        ("model_list: [{model_name: a, provider: openai, semantic_cache: {mode: loud}}]", "serve"),
        ("model_list: [{model_name: a, provider: openai, semantic_cache: {treshold: 0.9}}]", "treshold"),
        (
            "model_list: [{model_name: a, provider: openai, semantic_cache: {}},"
            " {model_name: a, provider: openai, semantic_cache: {threshold: 0.95}}]",
            "different semantic_cache",
        ),
    ],
)
def test_config_refuses_bad_settings(tmp_path: Path, text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("[", r"\[").replace("]", r"\]")):
        load_settings({"EDGE_CONFIG": str(_config(tmp_path, text))})


def test_config_check_names_the_semantic_groups(tmp_path: Path) -> None:
    import io

    from edge_agent.config_check import report

    path = _config(
        tmp_path,
        "model_list: [{model_name: a, provider: openai, semantic_cache: {mode: shadow}},"
        " {model_name: b, provider: openai}]",
    )
    out = io.StringIO()
    assert report(str(path), False, {"EDGE_MASTER_KEY": "k"}, out) == 0
    lines = [line for line in out.getvalue().splitlines() if "semantic cache" in line]
    assert lines == [
        "  semantic cache for a: shadow, threshold 0.9, messages up to 2000 characters"
        " (workers need `edge-agent semantic fetch`)"
    ]


async def test_the_stream_feeds_a_reader_and_skips_what_it_cannot_read() -> None:
    import asyncio
    import contextlib
    import time

    import fakeredis

    from edge_workers.semantic import stream
    from shared import keyspace

    redis = fakeredis.FakeAsyncRedis()
    entry = Entry("k", encode_features(features("one")), int(time.time() * 1000) + 60_000, "r0")
    async with redis.pipeline(transaction=False) as pipe:
        pipe.xadd(keyspace.semantic_vectors(), {b"x": b"not an entry"})
        stream.append(pipe, b"p", _unit(1), entry, ttl_s=3600)
        await pipe.execute()
    index = Index(max_vectors=10)
    reader = asyncio.create_task(stream.follow(redis, index))
    try:
        for _ in range(200):
            if index.count:
                break
            await asyncio.sleep(0.01)
        found = index.search(b"p", _unit(1), 0.99)
        assert [e.cache_key for _, e in found] == ["k"] and found[0][0] > 0.999  # float16 on the wire
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


def test_appends_trim_by_approximate_minid_at_the_ttl() -> None:
    """Never an exact trim: on a large stream that blocked Redis for 915 ms."""
    import time

    from edge_workers.semantic import stream

    calls: list[dict[str, object]] = []

    class Pipe:
        def xadd(self, name: str, fields: dict[bytes, bytes], **kwargs: object) -> None:
            calls.append(kwargs)

    entry = Entry("k", encode_features(features("one")), 0, "r0")
    stream.append(Pipe(), b"p", _unit(1), entry, ttl_s=3600)  # type: ignore[arg-type]
    (kwargs,) = calls
    assert kwargs["approximate"] is True
    assert abs(int(kwargs["minid"]) - (time.time() - 3600) * 1000) < 5000  # type: ignore[call-overload]
