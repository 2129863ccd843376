"""The L2 cache on a Redis of its own (CACHE_REDIS_URL) that evicts when full: a cache filled
far past its maxmemory under load loses cache entries only, never a queued job or a reply
(real processes: two redis-servers, a front, a worker, the official SDK)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack
from edge_agent.redis_server import RedisServer
from shared import keyspace

CACHE_BYTES = 2 * 2**20


@pytest.fixture(scope="module")
def cache() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=("--maxmemory", str(CACHE_BYTES), "--maxmemory-policy", "allkeys-lru"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stack(cache: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    dev = DevStack(
        env_overrides={"CACHE_REDIS_URL": cache.url},
        log_dir=Path(tmp_path_factory.mktemp("cache-redis-logs")),
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        yield dev
    finally:
        dev.stop()


def test_a_full_cache_evicts_its_own_entries_and_loses_no_request(
    stack: DevStack, cache: RedisServer
) -> None:
    front = stack.start_front()
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0)
    big = "[[fake:words=1500]]"  # ~10 KB answers: 600 of them are three times the cache's memory

    def ask(i: int) -> str:
        answer = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"fill {uuid.uuid4()} {big}"}]
        )
        return answer.choices[0].finish_reason

    with ThreadPoolExecutor(16) as pool:
        finished = list(pool.map(ask, range(600)))
    assert len(finished) == 600 and all(finished)  # every request answered
    cache_info = redis.Redis.from_url(cache.url).info()
    assert cache_info["evicted_keys"] > 0 and cache_info["used_memory"] <= CACHE_BYTES * 1.1
    assert stack.redis is not None
    main = redis.Redis.from_url(stack.redis.url)
    assert main.info()["evicted_keys"] == 0
    assert not list(main.scan_iter(match=keyspace.cache_entry("*")))  # L2 lives in the cache Redis only
    # The cache still serves: an answer asked again now is a hit from L2 (or L1).
    messages = [{"role": "user", "content": f"again {uuid.uuid4()}"}]
    first = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert first.headers["x-edge-cache"] == "miss"
    other = stack.start_front()  # another front: no L1 of it, so a hit must come from L2
    again = openai.OpenAI(base_url=f"{other.url}/v1", api_key=MASTER_KEY)
    hit = again.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    assert hit.headers["x-edge-cache"] == "hit-l2"


def test_the_front_warns_about_a_main_redis_that_may_evict_the_queue(stack: DevStack) -> None:
    assert stack.redis is not None
    main = redis.Redis.from_url(stack.redis.url)
    main.config_set("maxmemory", 512 * 2**20)
    main.config_set("maxmemory-policy", "volatile-lru")
    try:
        front = stack.start_front()
        assert stack.log_dir is not None
        logs = "".join(p.read_text() for p in stack.log_dir.glob("front-*.log"))
        assert "volatile-lru" in logs and "noeviction" in logs, logs[-2000:]
        assert front.process.poll() is None  # a warning, not a refusal to start
    finally:
        main.config_set("maxmemory", 0)
        main.config_set("maxmemory-policy", "noeviction")
