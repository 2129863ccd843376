"""`edge-agent up`: the whole stack as child processes, with nothing installed.

Starts a private redis-server when REDIS_URL (and REDIS_SENTINELS) is unset, and a fake upstream (with both
providers pointed at it) when no provider key is set, so that `curl` works on a bare machine.
Ready means every worker started here is registered and live, and the front on the port is
ours. Ctrl-C (or SIGTERM) stops every child, the front first and Redis last; if any child dies,
the others are stopped too; if `up` itself is killed, the children die with it
(`edge_agent.children`).
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from edge_agent.children import spawn, stop_processes
from edge_agent.fake_upstream.app import base_urls
from edge_agent.listen import bind_listener
from edge_agent.probes import PortTaken, answers_200, wait_listening, workers_ready
from edge_agent.redis_server import RedisServer, free_port
from shared.config import API_KEY_ENV, DEFAULT_CATALOG, PROVIDERS, ModelTable, load_settings

READY_TIMEOUT_S = 60.0  # a bound on a hang: two cores starting Redis, workers and a front take seconds


class _Stop(Exception):
    pass


@dataclass
class _Worker:
    provider: str
    metrics_port: int
    process: subprocess.Popen[bytes]


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return spawn([sys.executable, "-m", "edge_agent", *args], env)


def _start_fake_upstream(env: dict[str, str], attempts: int = 5) -> tuple[subprocess.Popen[bytes], int]:
    """The fake upstream on a free port, started again on another if someone took it first."""
    for attempt in range(attempts):
        port = free_port()
        proc = _spawn(["fake-upstream", "--port", str(port)], env)
        try:
            wait_listening(proc, port, answers_200(f"http://127.0.0.1:{port}/health"))
            return proc, port
        except BaseException as e:  # a stop (Ctrl-C) while it starts, too
            proc.kill()
            proc.wait(10)
            if not isinstance(e, PortTaken) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _providers(env: dict[str, str], models: ModelTable) -> list[str]:
    """The providers to start workers for: with a config file, every provider it serves (its
    deployments name their own key variables); without, those whose key is set."""
    if env.get("EDGE_CONFIG"):
        return sorted(models.providers())
    return [p for p in sorted(models.providers()) if env.get(API_KEY_ENV[p])]


def _example_model(env: dict[str, str], models: ModelTable, providers: list[str]) -> str:
    """A model the curl can ask for: the config's first, else the default catalogue's."""
    if not env.get("EDGE_CONFIG"):
        return "gpt-4o-mini" if "openai" in providers else DEFAULT_CATALOG[providers[0]][0]
    return next(name for name, provider in models.public_models() if provider in providers)


def _none_exited(children: list[subprocess.Popen[bytes]], then: Callable[[], bool]) -> Callable[[], bool]:
    def check() -> bool:
        for child in children:
            if child.poll() is not None:
                raise RuntimeError(f"a child process exited with {child.returncode} while starting")
        return then()

    return check


def run_stack(host: str, port: int, workers: int, front_processes: int = 1) -> None:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["HOST"] = host  # where workers serve their metrics: beside the front, loopback unless asked
    load_settings(env)  # a bad config stops here, before anything starts
    redis: RedisServer | None = None
    upstream: list[subprocess.Popen[bytes]] = []
    pool: list[_Worker] = []
    front: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = 0
    try:
        bind_listener(host, port).close()  # a taken port fails here, before anything starts
        if not env.get("REDIS_URL") and not env.get("REDIS_SENTINELS"):  # Sentinel names a Redis too
            redis = RedisServer().start()
            env["REDIS_URL"] = redis.url
            print(f"edge-agent: started a private redis-server on {redis.url}", flush=True)
        _, models = load_settings(env)
        providers = _providers(env, models)
        if not providers:
            fake, fake_port = _start_fake_upstream(env)
            upstream.append(fake)
            env.update(base_urls(fake_port))
            for p in PROVIDERS:
                env[API_KEY_ENV[p]] = "fake-upstream-key"
            providers = sorted(models.providers())  # those a model name routes to (not Azure)
            print(
                f"edge-agent: no provider key set; answering from a fake upstream on port {fake_port}",
                flush=True,
            )
        if not env.get("EDGE_MASTER_KEY"):
            env["EDGE_MASTER_KEY"] = "sk-edge-" + secrets.token_urlsafe(18)
        for provider in providers:
            for _ in range(workers):
                metrics_port = free_port()
                args = ["worker", "--provider", provider, "--metrics-port", str(metrics_port)]
                pool.append(_Worker(provider, metrics_port, _spawn(args, env)))
        front = _spawn(
            ["front", "--host", host, "--port", str(port), "--processes", str(front_processes)], env
        )
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        others = [*upstream, *(w.process for w in pool)]
        ready = workers_ready(f"http://{shown_host}:{port}", {p: workers for p in providers})
        try:
            # Our front on our port (not another process that took it meanwhile), every worker in.
            wait_listening(front, port, _none_exited(others, ready), READY_TIMEOUT_S)
        except PortTaken:
            raise RuntimeError(f"port {port} was taken by another process while the front started") from None
        _print_ready(shown_host, port, env["EDGE_MASTER_KEY"], _example_model(env, models, providers), pool)
        while front.poll() is None and all(child.poll() is None for child in others):
            time.sleep(0.2)
        print("edge-agent: a child process exited; stopping the stack", file=sys.stderr, flush=True)
        code = 1
    except _Stop:
        pass
    except RuntimeError as e:  # PortInUse too
        print(f"edge-agent: {e}", file=sys.stderr, flush=True)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # The front first (no new requests, its reply reader still has Redis), then the workers
        # and the upstream, Redis last: nobody loses a connection it still uses.
        stop_processes([front] if front is not None else [])
        stop_processes([w.process for w in pool] + upstream)
        if redis is not None:
            redis.stop()
        print("edge-agent: stopped", file=sys.stderr, flush=True)
    if code:
        raise SystemExit(code)


def _print_ready(host: str, port: int, key: str, model: str, pool: list[_Worker]) -> None:
    worker_lines = "".join(
        f"  {w.provider} worker (pid {w.process.pid}): http://{host}:{w.metrics_port}/metrics\n" for w in pool
    )
    print(
        "\nedge-agent is up. Try:\n\n"
        f"  curl -s http://{host}:{port}/v1/chat/completions \\\n"
        f"    -H 'Authorization: Bearer {key}' \\\n"
        "    -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n\n'
        f"Metrics: http://{host}:{port}/metrics   Health: http://{host}:{port}/health\n"
        f"Worker metrics:\n{worker_lines}"
        "Ctrl-C stops everything.\n",
        flush=True,
    )
