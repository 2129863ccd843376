"""The semantic cache with real processes: fronts, workers (the real model), the fake upstream,
and the openai SDK as the client."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from shared import keyspace
from tests.integration.conftest import fake_stats, sample, scrape, wait_until

CONFIG = """
model_list:
  - {model_name: house, provider: openai, model: gpt-4o-mini, semantic_cache: {threshold: 0.9}}
  - {model_name: shadowed, provider: openai, model: gpt-4o-mini, semantic_cache: {mode: shadow}}
  - {model_name: plain, provider: openai, model: gpt-4o-mini}
  - {model_name: claude, provider: anthropic, model: claude-3-5-haiku-latest}
"""


class Semantic:
    def __init__(self, dev: DevStack, fronts: list[Front], worker: Worker, anthropic: Worker) -> None:
        self.dev, self.fronts, self.worker, self.anthropic = dev, fronts, worker, anthropic
        self.redis = redis.Redis.from_url(dev.env["REDIS_URL"])

    def metric(self, name: str, **labels: str) -> float:
        return sample(scrape(self.worker.metrics_url), name, **labels)

    def wait_vectors(self, at_least: int) -> None:
        wait_until(lambda: self.metric("llm_edge_semantic_vectors") >= at_least, "the index to grow")

    def upstream_calls(self) -> int:
        return int(fake_stats(self.dev.upstream_url)["requests"])


@pytest.fixture(scope="module")
def semantic(tmp_path_factory: pytest.TempPathFactory, semantic_model_dir: Path) -> Iterator[Semantic]:
    """Worker 1 answers the first question; worker 2 starts after it (it replays the shared
    stream), worker 1 stops, and every later request goes to worker 2, through two fronts."""
    config = tmp_path_factory.mktemp("semantic") / "config.yaml"
    config.write_text(CONFIG)
    dev = DevStack(
        env_overrides={
            "EDGE_CONFIG": str(config),
            "EDGE_SEMANTIC_MODEL_DIR": str(semantic_model_dir),
            "EDGE_MAX_ATTEMPTS": "1",
        },
        log_dir=Path(tmp_path_factory.mktemp("semantic-logs")),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        first = dev.start_worker("openai")
        anthropic = dev.start_worker("anthropic")
        front = dev.start_front()
        state = Semantic(dev, [front], first, anthropic)
        answer = _ask(front, "What is the capital of France?")
        assert answer.headers["x-edge-cache"] == "miss"
        state.wait_vectors(1)
        state.first_answer = answer.parse().choices[0].message.content  # type: ignore[attr-defined]
        second = dev.start_worker("openai")
        dev.check_workers()  # its metrics port answers
        state.worker = second
        state.wait_vectors(1)  # replayed from the stream at its start
        first.process.terminate()
        first.process.wait(30)
        dev.workers.remove(first)
        state.fronts.append(dev.start_front())
        yield state
    finally:
        dev.stop()


_unique = itertools.count()


def _ask(front: Front, text: str, model: str = "house", key: str = MASTER_KEY, **extra: object):  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0)
    params: dict[str, object] = {"temperature": 0, **extra}
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **params
    )


def test_a_paraphrase_is_served_from_another_front_and_worker(semantic: Semantic) -> None:
    calls = semantic.upstream_calls()
    answer = _ask(semantic.fronts[1], "What's the capital of France?")
    assert answer.headers["x-edge-cache"] == "hit-semantic"
    assert answer.headers["x-edge-cost-usd"] == "0"
    assert answer.parse().choices[0].message.content == semantic.first_answer  # type: ignore[attr-defined]
    assert semantic.upstream_calls() == calls
    assert semantic.metric("llm_edge_semantic_hits_total", provider="openai", model="house") == 1
    assert semantic.metric("llm_edge_semantic_embed_ms_count", provider="openai", model="house") >= 1


def test_a_near_miss_goes_upstream(semantic: Semantic) -> None:
    vectors = semantic.metric("llm_edge_semantic_vectors")
    calls = semantic.upstream_calls()
    assert _ask(semantic.fronts[0], "Convert 100 USD to EUR.").headers["x-edge-cache"] == "miss"
    semantic.wait_vectors(vectors + 1)
    refused = semantic.metric("llm_edge_semantic_guard_refusals_total", provider="openai", model="house")
    answer = _ask(semantic.fronts[1], "Convert 100 EUR to USD.")
    assert answer.headers["x-edge-cache"] == "miss"
    assert "EUR to USD" in (answer.parse().choices[0].message.content or "")  # its own answer
    assert semantic.upstream_calls() == calls + 2
    assert semantic.metric("llm_edge_semantic_guard_refusals_total", provider="openai", model="house") == (
        refused + 1
    )


def test_a_streamed_paraphrase_is_replayed_as_chunks(semantic: Semantic) -> None:
    vectors = semantic.metric("llm_edge_semantic_vectors")
    first = _ask(semantic.fronts[0], "How do I reverse a list in Python?").parse()
    semantic.wait_vectors(vectors + 1)
    calls = semantic.upstream_calls()
    raw = _ask(semantic.fronts[1], "How can I reverse a list in Python?", stream=True)
    assert raw.headers["x-edge-cache"] == "hit-semantic"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
    assert text == first.choices[0].message.content
    assert semantic.upstream_calls() == calls


def test_shadow_mode_serves_nothing_but_counts(semantic: Semantic) -> None:
    vectors = semantic.metric("llm_edge_semantic_vectors")
    calls = semantic.upstream_calls()
    assert _ask(semantic.fronts[0], "Why is the sky blue?", "shadowed").headers["x-edge-cache"] == "miss"
    semantic.wait_vectors(vectors + 1)
    answer = _ask(semantic.fronts[1], "Why does the sky look blue?", "shadowed")
    assert answer.headers["x-edge-cache"] == "miss"
    assert semantic.upstream_calls() == calls + 2
    assert semantic.metric("llm_edge_semantic_shadow_hits_total", provider="openai", model="shadowed") == 1
    assert semantic.metric("llm_edge_semantic_hits_total", provider="openai", model="shadowed") == 0


def test_off_by_default_costs_nothing(semantic: Semantic) -> None:
    length = semantic.redis.xlen(keyspace.semantic_vectors())
    assert _ask(semantic.fronts[0], "Where is the Eiffel Tower?", "plain").headers["x-edge-cache"] == "miss"
    answer = _ask(semantic.fronts[1], "Where is the Eiffel Tower located?", "plain")
    assert answer.headers["x-edge-cache"] == "miss"
    assert semantic.redis.xlen(keyspace.semantic_vectors()) == length  # a group without it appends nothing
    # A worker whose provider serves no semantic group: model never loaded, no stream reader.
    claude = _ask(semantic.fronts[0], "Hello", "claude")
    assert claude.headers["x-edge-cache"] == "miss"
    maps = Path(f"/proc/{semantic.anthropic.pid}/maps").read_text()
    assert "onnxruntime" not in maps and "tokenizers" not in maps
    assert "onnxruntime" in Path(f"/proc/{semantic.worker.pid}/maps").read_text()
    assert "llm_edge_semantic" not in httpx.get(semantic.anthropic.metrics_url, timeout=10).text


def test_tenant_namespaces_never_share(semantic: Semantic) -> None:
    front = semantic.fronts[0]
    keys = [
        httpx.post(
            f"{front.url}/key/generate",
            json={"cache_namespace": name},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=10,
        ).json()["key"]
        for name in ("tenant-a", "tenant-b")
    ]
    for key in keys:  # every front learns new keys within a third of a second
        wait_until(
            lambda key=key: (
                httpx.get(
                    f"{semantic.fronts[1].url}/v1/models",
                    headers={"Authorization": f"Bearer {key}"},
                    timeout=10,
                ).status_code
                == 200
            ),
            "the second front to know the keys",
        )
    vectors = semantic.metric("llm_edge_semantic_vectors")
    assert _ask(front, "Who wrote Pride and Prejudice?", key=keys[0]).headers["x-edge-cache"] == "miss"
    semantic.wait_vectors(vectors + 1)
    other = _ask(semantic.fronts[1], "Who is the author of Pride and Prejudice?", key=keys[1])
    assert other.headers["x-edge-cache"] == "miss"
    same = _ask(semantic.fronts[1], "Who is the author of Pride and Prejudice?", key=keys[0])
    assert same.headers["x-edge-cache"] == "hit-semantic"


def test_only_eligible_requests_are_looked_up(semantic: Semantic) -> None:
    front = semantic.fronts[0]
    vectors = semantic.metric("llm_edge_semantic_vectors")
    assert _ask(front, "Give me tips for better sleep.").headers["x-edge-cache"] == "miss"
    semantic.wait_vectors(vectors + 1)
    paraphrase = "Can you give me some tips for better sleep?"
    skipped = _ask(front, paraphrase, extra_headers={"Cache-Control": "no-cache"})
    assert skipped.headers["x-edge-cache"] == "miss"  # no-cache skips the worker's lookup too
    # That answer is cached under its own exact key; another wording finds a vector.
    assert _ask(front, "Can you give me tips for better sleep?").headers["x-edge-cache"] == "hit-semantic"
