"""`edge-agent front --processes 2` (real processes, the official SDK): both processes serve the
one port, /metrics counts every process's requests, a dead child is replaced, and SIGTERM to the
parent drains both with the requests in flight answered."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from shared import keyspace
from tests.integration.conftest import sample, scrape, wait_until

PROCESSES = 2


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[DevStack, Front, Path]]:
    metrics_dir = tmp_path / "metrics"
    dev = DevStack(log_dir=tmp_path)
    try:
        dev.start_redis()
        dev.start_upstream()
        dev.start_worker("openai")
        # The group's metrics directory, as an operator may set it (the front's alone).
        front = dev.start_front(
            {**dev.env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, processes=PROCESSES
        )
        yield dev, front, metrics_dir
    finally:
        dev.stop()


def front_id(front: Front) -> str:
    """Which process answered: a new connection for each call (httpx.get), so the kernel picks."""
    body = httpx.get(f"{front.url}/health", timeout=10).json()
    return str(body["front_id"])


def front_ids(front: Front, n: int = 40) -> set[str]:
    return {front_id(front) for _ in range(n)}


def pid_of(front_id: str) -> int:
    return int(front_id.split("-")[-2])  # <hostname>-<pid>-<random>


def ask(front: Front, text: str) -> int:
    """One chat completion on a client of its own (its own connection)."""
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return raw.http_response.status_code


def per_process(metrics_dir: Path, kind: str, name: str, tmp: Path) -> list[float]:
    """A metric's value in each process's own multiprocess file (`kind`: counter, gauge_livesum)."""
    values = []
    for db_file in sorted(metrics_dir.glob(f"{kind}_*.db")):
        alone = tmp / f"{db_file.stem}-{uuid.uuid4().hex}"
        alone.mkdir()
        shutil.copy(db_file, alone)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))
        text = generate_latest(registry).decode()
        values.append(
            sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)
        )
    return values


def total(url: str, name: str) -> float:
    return sum(v for (n, _), v in scrape(url).items() if n == name)


def test_both_processes_serve_the_port_and_metrics_count_them_all(
    stack: tuple[DevStack, Front, Path], tmp_path: Path
) -> None:
    _, front, metrics_dir = stack
    ids = wait_until(
        lambda: len(front_ids(front, 10)) == PROCESSES and front_ids(front), "both processes answering"
    )
    assert len(ids) == PROCESSES
    assert all(pid_of(i) != front.process.pid for i in ids)  # children answer, not the parent

    sent = 30
    for i in range(sent):
        assert ask(front, f"group {uuid.uuid4()} {i}") == 200

    samples = scrape(f"{front.url}/metrics")
    assert total(f"{front.url}/metrics", "llm_edge_requests_total") == sent
    assert (
        sample(samples, "llm_edge_requests_total", provider="openai", model="gpt-4o-mini", status="200")
        == sent
    )
    # Both processes answered some of them (30 connections, each placed by the kernel's hash),
    # and their own files add up to what /metrics says.
    counts = per_process(metrics_dir, "counter", "llm_edge_requests_total", tmp_path)
    assert len(counts) == PROCESSES
    assert all(n > 0 for n in counts), counts
    assert sum(counts) == sent
    # Gauges: in-progress summed over live processes (none now); a shared reading, once.
    assert sample(samples, "llm_edge_active_requests") == 0
    assert sample(samples, "llm_edge_live_workers", provider="openai") == 1


def test_a_dead_child_is_replaced(stack: tuple[DevStack, Front, Path]) -> None:
    _, front, _ = stack
    ids = wait_until(lambda: front_ids(front) if len(front_ids(front, 10)) == PROCESSES else None, "both")
    victim = next(iter(ids))
    os.kill(pid_of(victim), signal.SIGKILL)

    def replaced() -> bool:
        now = front_ids(front, 20)
        return len(now) == PROCESSES and victim not in now

    wait_until(replaced, "a new process in the dead one's place")
    assert front.process.poll() is None
    assert ask(front, f"after a restart {uuid.uuid4()}") == 200


def test_sigterm_drains_every_process(stack: tuple[DevStack, Front, Path], tmp_path: Path) -> None:
    dev, front, metrics_dir = stack
    ids = wait_until(lambda: front_ids(front) if len(front_ids(front, 10)) == PROCESSES else None, "both")
    assert dev.redis is not None
    r = redis.Redis.from_url(dev.redis.url)
    answers: list[int] = []
    threads: list[threading.Thread] = []

    def in_progress() -> list[float]:
        return per_process(metrics_dir, "gauge_livesum", "llm_edge_active_requests", tmp_path)

    # Slow requests, each on a connection of its own, until every process holds at least one.
    while len(threads) < 4 or min(in_progress()) == 0:
        assert len(threads) < 30, "the kernel never gave the second process a connection"
        text = f"drain {uuid.uuid4()} [[fake:delay_ms=5000]]"
        threads.append(threading.Thread(target=lambda text=text: answers.append(ask(front, text))))
        threads[-1].start()
        wait_until(lambda: sum(in_progress()) == len(threads), "the request in a front")
    assert total(f"{front.url}/metrics", "llm_edge_active_requests") == len(threads)
    wait_until(lambda: sum(int(v) for v in r.hvals(keyspace.load("openai"))) == len(threads), "all upstream")
    started = time.monotonic()
    front.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [200] * len(threads)
    assert front.process.wait(timeout=15) == 0
    assert time.monotonic() - started < 15
    for i in ids:  # every child is gone, not orphaned
        with pytest.raises(ProcessLookupError):
            os.kill(pid_of(i), 0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{front.url}/health", timeout=2)
    # The operator's PROMETHEUS_MULTIPROC_DIR is kept (emptied at the next start), not removed.
    assert metrics_dir.is_dir()


def test_a_group_refuses_a_taken_port() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        env = {**os.environ, "EDGE_MASTER_KEY": MASTER_KEY, "REDIS_URL": "redis://127.0.0.1:1/0"}
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent",
                "front",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--processes",
                "2",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.close()
    assert out.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in out.stderr
