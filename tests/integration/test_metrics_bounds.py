"""The front's /metrics, bounded and guarded (real processes): made-up model names do not grow
the series past EDGE_METRICS_MAX_MODELS, no `_created` twins, EDGE_METRICS_TOKEN guards it, and
requests are timed by provider, model and cache tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.redis_server import RedisServer
from tests.integration.conftest import Samples, scrape

TOKEN = "metrics-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(
        env_overrides={"EDGE_METRICS_TOKEN": TOKEN, "EDGE_METRICS_MAX_MODELS": "20"},
        log_dir=Path(tmp_path_factory.mktemp("metrics-logs")),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def front(stack: DevStack) -> Front:
    return stack.start_front()


def metrics(front: Front) -> Samples:
    return scrape(f"{front.url}/metrics", AUTH)


def test_metrics_want_the_token_or_the_master_key(front: Front) -> None:
    refused = httpx.get(f"{front.url}/metrics")
    assert refused.status_code == 401 and refused.json()["error"]["message"]
    assert httpx.get(f"{front.url}/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(f"{front.url}/metrics", headers=AUTH).status_code == 200
    master = httpx.get(f"{front.url}/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert master.status_code == 200 and "_created" not in master.text


def test_requests_are_timed_by_provider_model_and_tier_and_streams_by_first_token(front: Front) -> None:
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY)
    messages = [{"role": "user", "content": f"timed {uuid.uuid4()}"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    # Chunks apart in time: ones that arrive together go out in one write, with no gap between.
    stream = [{"role": "user", "content": f"streamed {uuid.uuid4()} [[fake:chunk_delay_ms=20]]"}]
    list(client.chat.completions.create(model="gpt-4o-mini", messages=stream, stream=True))  # type: ignore[arg-type]
    samples = metrics(front)
    counts = {
        dict(labels)["cache"]: value
        for (name, labels), value in samples.items()
        if name == "llm_edge_request_duration_ms_count"
        and ("model", "gpt-4o-mini") in labels
        and ("provider", "openai") in labels
    }
    assert counts.get("miss", 0) >= 2 and counts.get("hit-l1", 0) >= 1, counts
    ttft = sum(v for (name, _), v in samples.items() if name == "llm_edge_stream_ttft_ms_count")
    gaps = sum(v for (name, _), v in samples.items() if name == "llm_edge_stream_chunk_gap_ms_count")
    assert ttft >= 1 and gaps >= 1


def test_ten_thousand_made_up_model_names_add_at_most_the_configured_number_of_series(
    stack: DevStack,
) -> None:
    # A front whose Redis has no worker: every request is routed (its model becomes a label
    # value) and refused at once with 503, so 10,000 of them take seconds.
    empty = RedisServer().start()
    lonely = stack.start_front({**stack.env, "REDIS_URL": empty.url}, wait_path="/health/live")
    try:
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}

        def ask(client: httpx.Client, i: int) -> int:
            body = {"model": f"gpt-made-up-{i}", "messages": [{"role": "user", "content": "x"}]}
            return client.post(f"{lonely.url}/v1/chat/completions", json=body, headers=headers).status_code

        with httpx.Client(timeout=30) as client, ThreadPoolExecutor(8) as pool:
            statuses = set(pool.map(lambda i: ask(client, i), range(10_000)))
        assert statuses == {503}
        samples = metrics(lonely)
        models = {
            dict(labels)["model"]
            for (name, labels), _ in samples.items()
            if name == "llm_edge_requests_total"
        }
        made_up = {m for m in models if m.startswith("gpt-made-up-")}
        assert len(made_up) == 20 and "other" in models
        assert len(models) <= 20 + 1
    finally:
        lonely.process.terminate()
        lonely.process.wait(10)
        empty.stop()
