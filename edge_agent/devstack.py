"""Real processes for tests and benchmarks: redis-server, fake upstream, workers, fronts.

Each process is started the way an operator would start it (`python -m edge_agent ...`), on
free loopback ports, with the environment a test asks for. A free port can be taken by another
process before the child binds it: each start checks that the child itself listens on its port
(see `edge_agent.probes.wait_listening`) and starts it again on another port when it does not.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from edge_agent.children import spawn, stop_processes
from edge_agent.fake_upstream.app import base_urls
from edge_agent.probes import PortTaken, answers_200, wait_listening, workers_ready
from edge_agent.redis_server import RedisServer, free_port

MASTER_KEY = "sk-edge-test-key"


@dataclass
class Front:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Worker:
    """A worker process and the port it serves its Prometheus metrics on."""

    provider: str
    process: subprocess.Popen[bytes]
    metrics_port: int
    env: dict[str, str] | None = None
    listening: bool = False  # checked: the metrics port is this process's own

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"


def _redis_of(env: dict[str, str]) -> str:
    """Which Redis a process started with `env` uses: its sentinels, or else REDIS_URL."""
    return env.get("REDIS_SENTINELS") or env["REDIS_URL"]


@dataclass
class DevStack:
    env_overrides: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    redis: RedisServer | None = None
    upstream_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.redis is not None:
            env["REDIS_URL"] = self.redis.url
        else:  # no Redis of its own: the overrides name one (REDIS_SENTINELS, for instance)
            assert {"REDIS_URL", "REDIS_SENTINELS"} & self.env_overrides.keys(), "no Redis: start_redis()"
        env.update(
            {
                "EDGE_MASTER_KEY": MASTER_KEY,
                **base_urls(self.upstream_port),
                "OPENAI_API_KEY": "sk-upstream-openai",
                "ANTHROPIC_API_KEY": "sk-upstream-anthropic",
                "GEMINI_API_KEY": "upstream-gemini-key",
                "AZURE_OPENAI_API_KEY": "upstream-azure-key",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
                "HOST": "127.0.0.1",  # where workers serve their metrics (fronts get --host)
            }
        )
        env.update(self.env_overrides)
        return env

    @property
    def upstream_url(self) -> str:
        return f"http://127.0.0.1:{self.upstream_port}"

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        out: int | IO[bytes] = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = open(self.log_dir / f"{name}-{len(self.processes)}.log", "wb")
        proc = spawn([sys.executable, "-m", "edge_agent", *args], env or self.env, out, subprocess.STDOUT)
        self.processes.append(proc)
        return proc

    def start_redis(self) -> None:
        self.redis = RedisServer().start()

    def _discard(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        self.processes.remove(proc)

    def spawn_listening(
        self,
        name: str,
        args: Callable[[int], list[str]],
        ready: Callable[[int], Callable[[], bool]],
        env: dict[str, str] | None = None,
        attempts: int = 5,
        meanwhile: Callable[[], None] = lambda: None,
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Spawn a server on a free port; returns it once it listens there itself and `ready(port)`
        holds, running `meanwhile` while it starts. Another try on another port if someone
        else took the port first."""
        for attempt in range(attempts):
            port = free_port()
            proc = self.spawn(name, args(port), env)
            meanwhile()
            try:
                wait_listening(proc, port, ready(port))
                return proc, port
            except PortTaken:
                self._discard(proc)
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def start_upstream(self, *flags: str) -> None:
        """The stack's own fake upstream (the one OPENAI_BASE_URL/ANTHROPIC_BASE_URL name)."""
        self.upstream_port = int(self.spawn_upstream(*flags).rsplit(":", 1)[1])

    def spawn_upstream(self, *flags: str) -> str:
        """Another fake upstream (e.g. one that fails or wants another key); returns its URL."""
        _, port = self.spawn_listening(
            "upstream",
            lambda port: ["fake-upstream", "--port", str(port), *flags],
            lambda port: answers_200(f"http://127.0.0.1:{port}/health"),
        )
        return f"http://127.0.0.1:{port}"

    def start_worker(self, provider: str, env: dict[str, str] | None = None) -> Worker:
        """Spawn a worker serving its metrics on a free port. It is not waited for here (workers
        start while the front does): `start_front` or `check_workers` check its port."""
        port = free_port()
        proc = self.spawn(
            f"worker-{provider}", ["worker", "--provider", provider, "--metrics-port", str(port)], env
        )
        worker = Worker(provider, proc, port, env)
        self.workers.append(worker)
        return worker

    def check_workers(self, attempts: int = 5) -> None:
        """Wait until every worker started so far serves metrics on its own port; one whose port
        another process took is started again on another port (its `process` changes)."""
        for worker in self.workers:
            for attempt in range(attempts):
                if worker.listening:
                    break
                try:
                    wait_listening(worker.process, worker.metrics_port)
                    worker.listening = True
                except PortTaken:
                    if attempt == attempts - 1:
                        raise
                    self._discard(worker.process)
                    worker.metrics_port = free_port()
                    worker.process = self.spawn(
                        f"worker-{worker.provider}",
                        ["worker", "--provider", worker.provider, "--metrics-port", str(worker.metrics_port)],
                        worker.env,
                    )

    def start_front(
        self, env: dict[str, str] | None = None, wait_path: str | None = None, processes: int = 1
    ) -> Front:
        """Start a front (`processes` > 1: a front group); by default return once every worker
        started so far on its Redis is registered and live (so any provider's request finds its
        worker). A `wait_path` such as "/health/ready" or "/health/live" waits for that path to
        answer 200 instead."""
        redis = _redis_of(env or self.env)
        expected = Counter(w.provider for w in self.workers if _redis_of(w.env or self.env) == redis)

        def ready(port: int) -> Callable[[], bool]:
            url = f"http://127.0.0.1:{port}"
            return workers_ready(url, expected) if wait_path is None else answers_200(url + wait_path)

        proc, port = self.spawn_listening(
            "front",
            lambda port: ["front", "--host", "127.0.0.1", "--port", str(port), "--processes", str(processes)],
            ready,
            env,
            meanwhile=self.check_workers,  # the workers started so far, while the front starts
        )
        return Front(port, proc)

    def start(self, providers: tuple[str, ...] = ("openai", "anthropic", "gemini")) -> Front:
        self.start_redis()
        self.start_upstream()
        for provider in providers:
            self.start_worker(provider)
        return self.start_front()

    def stop(self) -> None:
        stop_processes(self.processes)
        self.processes.clear()
        self.workers.clear()
        if self.redis is not None:
            self.redis.stop()
