"""Real processes: a redis-server of our own, the fake upstream, workers and fronts."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    # The core tests inject upstream errors on purpose: one attempt each, and no breaker opening
    # for everyone. Retries, failover and breakers have their own stacks (test_resilience.py).
    overrides = {"EDGE_MAX_ATTEMPTS": "1", "EDGE_BREAKER_FAILURES": "1000000"}
    dev = DevStack(env_overrides=overrides, log_dir=Path(tmp_path_factory.mktemp("logs")))
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        dev.start_worker("anthropic")
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="session")
def front(stack: DevStack) -> Front:
    return stack.front  # type: ignore[attr-defined,no-any-return]


def sdk(front: Front, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, **kwargs)


@pytest.fixture(scope="session")
def client(front: Front) -> openai.OpenAI:
    return sdk(front)
