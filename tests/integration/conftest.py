"""Real processes: a redis-server of our own, the fake upstream, workers and fronts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front, Worker
from edge_agent.redis_server import RedisServer

T = TypeVar("T")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # The core tests inject upstream errors on purpose: one attempt each, and no breaker opening
    # for everyone. Retries, failover and breakers have their own stacks (test_resilience.py).
    overrides = {"EDGE_MAX_ATTEMPTS": "1", "EDGE_BREAKER_FAILURES": "1000000"}
    dev = DevStack(env_overrides=overrides, log_dir=Path(tmp_path_factory.mktemp("logs")))
    try:
        dev.start_redis()
        dev.start_upstream()
        # A worker for every provider a model name routes to: /health counts each of them.
        providers = ("openai", "anthropic", "gemini")
        dev.session_workers = {p: dev.start_worker(p) for p in providers}  # type: ignore[attr-defined]
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A redis-server of the test module's own, for tests of scripts and jobs without processes."""
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        srv.stop()


def two_fronts(
    tmp_path_factory: pytest.TempPathFactory, name: str, window_s: int, env: dict[str, str] | None = None
) -> Iterator[DevStack]:
    """A Redis, the fake upstream, an openai worker and two fronts (`stack.fronts`), one attempt
    per request and the key windows `window_s` long (and `env`): what the virtual-key limit and
    cache control tests share."""
    dev = DevStack(
        env_overrides={"EDGE_MAX_ATTEMPTS": "1", "EDGE_KEY_WINDOW_S": str(window_s), **(env or {})},
        log_dir=Path(tmp_path_factory.mktemp(name)),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.fronts = (dev.start_front(), dev.start_front())  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture
async def r(server: RedisServer) -> AsyncIterator[Redis]:
    """An asyncio client of the module's redis-server, emptied first (modules that drive real
    processes define their own `r`)."""
    client = Redis.from_url(server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def front(stack: DevStack) -> Front:
    return stack.front  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="session")
def workers(stack: DevStack) -> dict[str, Worker]:
    """The session stack's worker of each provider (the only ones on its Redis)."""
    return stack.session_workers  # type: ignore[attr-defined,no-any-return]


def sdk(front: Front, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def client(front: Front) -> openai.OpenAI:
    return sdk(front)


def wait_until(condition: Callable[[], T], what: str, timeout_s: float = 20.0, every_s: float = 0.02) -> T:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` at the deadline.

    The deadline only bounds a hang: it is far beyond what any condition needs on a slow machine.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, headers: dict[str, str] | None = None) -> Samples:
    """Every sample of a Prometheus endpoint, keyed by (sample name, labels)."""
    text = httpx.get(url, headers=headers, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when it was never observed (a labelled child not yet created)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def fake_stats(upstream_url: str) -> dict[str, Any]:
    stats: dict[str, Any] = httpx.get(f"{upstream_url}/_fake/stats", timeout=10).json()
    return stats
