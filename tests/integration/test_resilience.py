"""Routing and resilience with real processes: failover, retries, breakers, fallbacks, crash
recovery, admission and deadlines. Each test has its own Redis, upstreams and config."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.redis_server import RedisServer
from shared import keyspace
from tests.integration.conftest import sample, scrape, wait_until


class Cluster:
    """A private gateway: its own Redis, a good and a bad fake upstream, config-driven workers."""

    def __init__(self, base: DevStack, tmp: Path) -> None:
        self.base = base
        self.tmp = tmp
        self.redis = RedisServer().start()
        self.good = self._upstream()
        self.bad = self._upstream("--error-rate", "1", "--error-status", "500")
        self.env: dict[str, str] = {}

    def _upstream(self, *flags: str) -> str:
        return self.base.spawn_upstream(*flags)

    def configure(self, yaml_text: str, **env: str) -> None:
        config = self.tmp / f"models-{uuid.uuid4().hex[:6]}.yaml"
        config.write_text(yaml_text.replace("GOOD", self.good).replace("BAD", self.bad))
        self.env = {**self.base.env, "REDIS_URL": self.redis.url, "EDGE_CONFIG": str(config), **env}

    def worker(self, provider: str = "openai"):  # type: ignore[no-untyped-def]
        return self.base.start_worker(provider, self.env)

    def front(self) -> Front:
        # Every worker started so far, not only the first (/health/ready): a fallback to the
        # other provider must find its worker already there.
        return self.base.start_front(self.env)

    def calls(self, upstream: str, model: str) -> int:
        return int(httpx.get(f"{upstream}/_fake/stats").json()["by_model"].get(model, 0))

    def stop(self) -> None:
        self.redis.stop()


@pytest.fixture
def cluster(stack: DevStack, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(stack, tmp_path)
    try:
        yield c
    finally:
        c.stop()


def client(front: Front) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=30)


def ask(front: Front, model: str, text: str = "hi", **kwargs):  # type: ignore[no-untyped-def]
    messages = [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]
    return client(front).chat.completions.with_raw_response.create(model=model, messages=messages, **kwargs)


ONE_DEPLOYMENT = """
model_list:
  - {{model_name: gpt-x, provider: openai, model: {model}, base_url: GOOD/v1}}
"""
TWO_DEPLOYMENTS = """
model_list:
  - {model_name: gpt-x, provider: openai, model: bad-model, base_url: BAD/v1, priority: 0}
  - {model_name: gpt-x, provider: openai, model: good-model, base_url: GOOD/v1, priority: 1}
router_settings:
  breaker: {failures: 3, window_s: 30, cooldown_s: 3, half_open_probes: 1, close_after: 2}
"""


def test_failover_from_a_failing_deployment_to_a_healthy_one(cluster: Cluster) -> None:
    cluster.configure(TWO_DEPLOYMENTS)
    cluster.worker()
    front = cluster.front()
    raw = ask(front, "gpt-x")
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-edge-attempts"] == "2"
    assert raw.headers["x-edge-model"] == "good-model" and raw.headers["x-edge-provider"] == "openai"


def _breaker(front: Front, deployment: str) -> str:
    return str(httpx.get(f"{front.url}/health").json()["breakers"][deployment])


def test_breaker_opens_skips_the_failing_upstream_then_half_opens_and_closes(cluster: Cluster) -> None:
    cluster.configure(TWO_DEPLOYMENTS)
    cluster.worker()
    cluster.worker()
    fronts = [cluster.front(), cluster.front()]
    for i in range(3):  # three failures at the bad deployment open its breaker
        assert ask(fronts[i % 2], "gpt-x").headers["x-edge-attempts"] == "2"
    assert cluster.calls(cluster.bad, "bad-model") == 3
    # Every front sees the shared breaker (the 3 s cooldown is far off).
    wait_until(
        lambda: all(_breaker(f, "gpt-x#0") == "open" for f in fronts), "the breaker open at each front"
    )
    for i in range(6):
        assert ask(fronts[i % 2], "gpt-x").headers["x-edge-attempts"] == "1"
    assert cluster.calls(cluster.bad, "bad-model") == 3  # never touched while open
    assert _breaker(fronts[1], "gpt-x#1") == "closed"
    metric = sample(scrape(f"{fronts[0].url}/metrics"), "llm_edge_breaker_state", deployment="gpt-x#0")
    assert metric == 2  # open

    httpx.post(f"{cluster.bad}/_fake/config", json={"error_rate": 0})  # the upstream recovers
    wait_until(  # the cooldown passes: half-open, one probe at a time
        lambda: all(_breaker(f, "gpt-x#0") == "half_open" for f in fronts),
        "the cooldown to end at each front",
    )
    for i in range(4):
        ask(fronts[i % 2], "gpt-x")
    assert cluster.calls(cluster.bad, "bad-model") >= 5  # probes went through and succeeded
    wait_until(lambda: _breaker(fronts[0], "gpt-x#0") == "closed", "the breaker to close")
    assert ask(fronts[0], "gpt-x").headers["x-edge-model"] == "bad-model"  # back to first priority


def test_429_retry_after_is_respected(cluster: Cluster) -> None:
    cluster.configure(
        "model_list:\n  - {model_name: gpt-x, provider: openai, model: m429, base_url: GOOD/v1}\n"
    )
    cluster.worker()
    front = cluster.front()
    started = time.monotonic()
    raw = ask(front, "gpt-x", "[[fake:status=429]] [[fake:times=1]] [[fake:retry_after=0.6]]")
    waited = time.monotonic() - started
    assert raw.parse().choices[0].message.content
    assert raw.headers["x-edge-attempts"] == "2"
    assert waited >= 0.6


def test_no_retry_on_400_and_final_failures_tell_the_sdk_not_to_retry(cluster: Cluster) -> None:
    cluster.configure(
        "model_list:\n  - {model_name: gpt-x, provider: openai, model: m400, base_url: GOOD/v1}\n"
        "router_settings: {retry: {max_attempts: 3, initial_backoff_ms: 10}}\n"
    )
    cluster.worker()
    front = cluster.front()
    with pytest.raises(openai.BadRequestError):
        ask(front, "gpt-x", "[[fake:status=400]]")
    assert cluster.calls(cluster.good, "m400") == 1
    with pytest.raises(openai.InternalServerError) as caught:
        ask(front, "gpt-x", "[[fake:status=503]]")
    assert cluster.calls(cluster.good, "m400") == 4  # 1 + three attempts, the bound
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert caught.value.response.headers["x-edge-attempts"] == "3"


def test_fallback_across_providers_answers_in_openai_shape(cluster: Cluster) -> None:
    cluster.configure(
        "model_list:\n"
        "  - {model_name: gpt-primary, provider: openai, model: primary, base_url: BAD/v1}\n"
        "  - {model_name: claude-backup, provider: anthropic, model: claude-backup-model, base_url: GOOD}\n"
        "router_settings: {fallbacks: {gpt-primary: [claude-backup]}}\n"
    )
    cluster.worker("openai")
    cluster.worker("anthropic")
    front = cluster.front()
    raw = ask(front, "gpt-primary")
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.choices[0].message.content
    assert (
        raw.headers["x-edge-provider"] == "anthropic" and raw.headers["x-edge-model"] == "claude-backup-model"
    )
    stream = client(front).chat.completions.create(
        model="gpt-primary", messages=[{"role": "user", "content": "stream please"}], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def test_a_killed_worker_s_jobs_are_rerun_by_another(cluster: Cluster) -> None:
    cluster.configure(
        "model_list:\n  - {model_name: gpt-x, provider: openai, model: crash, base_url: GOOD/v1}\n",
        EDGE_REQUEST_TIMEOUT="20",
    )
    victim = cluster.worker()
    cluster.worker()
    front = cluster.front()
    results: list[int] = []

    def one(i: int) -> None:
        body = {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": f"[[fake:delay_ms=1500]] {i} {uuid.uuid4()}"}],
        }
        r = httpx.post(
            f"{front.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        )
        results.append(r.status_code)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    r = redis.Redis.from_url(cluster.redis.url)

    def victim_busy_upstream() -> bool:
        """The victim holds jobs, and every job held (by either worker) has reached the upstream."""
        victim_held = sum(r.scard(k) for k in r.scan_iter(keyspace.running(f"*-{victim.pid}-*")))
        held = sum(r.scard(k) for k in r.scan_iter(keyspace.running("*")))
        return victim_held > 0 and cluster.calls(cluster.good, "crash") >= held

    wait_until(victim_busy_upstream, "the victim to hold jobs that reached the upstream")
    os.kill(victim.pid, signal.SIGKILL)
    for t in threads:
        t.join()
    # Rerun after the crash, not at the job's lease (deadline + 5 s): all answered before their deadline.
    assert results == [200] * 20
    assert cluster.calls(cluster.good, "crash") > 20  # the victim's jobs ran twice upstream...


def provider_health(front: Front, provider: str = "openai") -> dict[str, Any]:
    return httpx.get(f"{front.url}/health").json()["providers"][provider]  # type: ignore[no-any-return]


def test_admission_counts_only_waiting_jobs_and_refuses_with_retry_after(cluster: Cluster) -> None:
    cluster.configure(
        "model_list:\n  - {model_name: gpt-x, provider: openai, model: full, base_url: GOOD/v1}\n"
        "router_settings: {max_queue_depth: {openai: 3}}\n",
        EDGE_WORKER_CONCURRENCY="4",
    )
    cluster.worker()
    front = cluster.front()
    statuses: list[int] = []

    def one(text: str = "[[fake:delay_ms=2500]]") -> None:
        try:
            statuses.append(ask(front, "gpt-x", text).status_code)
        except openai.APIStatusError as e:
            statuses.append(e.status_code)

    def start(n: int) -> list[threading.Thread]:
        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        return threads

    # Four jobs fill the worker's four slots: they run, nothing waits, and the front knows it...
    threads = start(4)
    wait_until(
        lambda: provider_health(front)["router_view"] == {"waiting": 0, "running": 4},
        "four running jobs, none waiting, as the front's router sees it",
    )
    # ...so three more are admitted (running jobs counted as queued would refuse them: 4 >= 3)...
    threads += start(3)
    wait_until(lambda: provider_health(front)["router_view"]["waiting"] == 3, "three waiting jobs")
    # ...and the next one is refused at once, with a Retry-After.
    with pytest.raises(openai.RateLimitError) as caught:
        ask(front, "gpt-x")
    assert caught.value.body["code"] == "queue_full"
    assert int(caught.value.response.headers["retry-after"]) >= 1
    for t in threads:
        t.join()
    assert statuses == [200] * 7


def test_a_deadline_from_x_edge_timeout_expires_in_the_queue_and_never_reaches_upstream(
    cluster: Cluster,
) -> None:
    cluster.configure(
        "model_list:\n  - {model_name: gpt-x, provider: openai, model: late, base_url: GOOD/v1}\n",
        EDGE_REQUEST_TIMEOUT="30",
    )
    worker = cluster.worker()
    front = cluster.front()
    before = scrape(worker.metrics_url)
    os.kill(worker.pid, signal.SIGSTOP)  # frozen, still alive to the front: the job waits in the queue
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            # Without the header the deadline would be 30 s: the client would give up at 10 s first.
            ask(front, "gpt-x", extra_headers={"x-edge-timeout": "0.5"}, timeout=10)
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert caught.value.status_code == 504
    wait_until(
        lambda: (
            sample(
                scrape(worker.metrics_url), "llm_edge_worker_jobs_total", provider="openai", status="expired"
            )
            - sample(before, "llm_edge_worker_jobs_total", provider="openai", status="expired")
        ),
        "the worker to take the job and drop it as expired",
    )
    assert cluster.calls(cluster.good, "late") == 0


def test_workers_and_fronts_survive_a_redis_restart(cluster: Cluster) -> None:
    cluster.configure(ONE_DEPLOYMENT.format(model="restart"))
    worker = cluster.worker()
    front = cluster.front()
    assert ask(front, "gpt-x").parse().choices[0].message.content
    port = cluster.redis.port
    cluster.redis.stop()
    with pytest.raises(openai.InternalServerError) as caught:
        ask(front, "gpt-x")
    assert caught.value.status_code == 503 and caught.value.response.headers["retry-after"]
    cluster.redis = RedisServer(port=port).start()  # empty: no scripts, no keys, no health

    def answered() -> bool:
        try:
            return bool(ask(front, "gpt-x").parse().choices[0].message.content)
        except openai.InternalServerError:
            return False

    wait_until(answered, "the stack to recover after Redis came back", timeout_s=15, every_s=0.3)
    assert worker.poll() is None
