"""Real processes for tests and benchmarks: redis-server, fake upstream, workers, fronts.

Each process is started the way an operator would start it (`python -m edge_agent ...`), on
free loopback ports, with the environment a test asks for.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from edge_agent.probes import wait_http
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
class DevStack:
    env_overrides: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    redis: RedisServer | None = None
    upstream_port: int = 0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        assert self.redis is not None
        env = dict(os.environ)
        env.update(
            {
                "REDIS_URL": self.redis.url,
                "EDGE_MASTER_KEY": MASTER_KEY,
                "OPENAI_BASE_URL": f"http://127.0.0.1:{self.upstream_port}/v1",
                "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{self.upstream_port}",
                "OPENAI_API_KEY": "sk-upstream-openai",
                "ANTHROPIC_API_KEY": "sk-upstream-anthropic",
                "PYTHONUNBUFFERED": "1",
                "LOG_LEVEL": "WARNING",
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
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent", *args],
            env=env or self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(proc)
        return proc

    def start_redis(self) -> None:
        self.redis = RedisServer().start()

    def start_upstream(self, *flags: str) -> None:
        self.upstream_port = free_port()
        proc = self.spawn("upstream", ["fake-upstream", "--port", str(self.upstream_port), *flags])
        wait_http(f"{self.upstream_url}/health", watch=[proc])

    def start_worker(self, provider: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return self.spawn(
            f"worker-{provider}", ["worker", "--provider", provider, "--metrics-port", "0"], env
        )

    def start_front(self, env: dict[str, str] | None = None, wait_path: str = "/health") -> Front:
        """`wait_path` "/health" waits for every provider's worker, "/health/live" for the front only."""
        port = free_port()
        proc = self.spawn("front", ["front", "--host", "127.0.0.1", "--port", str(port)], env)
        front = Front(port, proc)
        wait_http(front.url + wait_path, watch=[proc])
        return front

    def start(self, providers: tuple[str, ...] = ("openai", "anthropic")) -> Front:
        self.start_redis()
        self.start_upstream()
        for provider in providers:
            self.start_worker(provider)
        return self.start_front()

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.processes.clear()
        if self.redis is not None:
            self.redis.stop()
