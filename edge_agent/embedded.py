"""`edge-agent up`: the whole stack as child processes, with nothing installed.

Starts a private redis-server when REDIS_URL is unset, and a fake upstream (with both
providers pointed at it) when no provider key is set, so that `curl` works on a bare machine.
Ctrl-C (or SIGTERM) stops every child; if any child dies, the others are stopped too.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from types import FrameType

from edge_agent.probes import PortTaken, answers_200, wait_http, wait_listening
from edge_agent.redis_server import RedisServer, free_port
from shared.config import API_KEY_ENV, PROVIDERS, load_settings


class _Stop(Exception):
    pass


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "edge_agent", *args], env=env)


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


def run_stack(host: str, port: int, workers: int) -> None:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    load_settings(env)  # a bad config stops here, before anything starts
    redis: RedisServer | None = None
    children: list[subprocess.Popen[bytes]] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        if not env.get("REDIS_URL"):
            redis = RedisServer().start()
            env["REDIS_URL"] = redis.url
            print(f"edge-agent: started a private redis-server on {redis.url}", flush=True)
        providers: list[str] = [p for p in PROVIDERS if env.get(API_KEY_ENV[p])]
        if not providers and not env.get("EDGE_CONFIG"):
            fake, fake_port = _start_fake_upstream(env)
            children.append(fake)
            env["OPENAI_BASE_URL"] = f"http://127.0.0.1:{fake_port}/v1"
            env["ANTHROPIC_BASE_URL"] = f"http://127.0.0.1:{fake_port}"
            for p in PROVIDERS:
                env[API_KEY_ENV[p]] = "fake-upstream-key"
            providers = list(PROVIDERS)
            print(
                f"edge-agent: no provider key set; answering from a fake upstream on port {fake_port}",
                flush=True,
            )
        elif not providers:
            _, models = load_settings(env)
            providers = sorted(models.providers())
        if not env.get("EDGE_MASTER_KEY"):
            env["EDGE_MASTER_KEY"] = "sk-edge-" + secrets.token_urlsafe(18)
        for provider in providers:
            for _ in range(workers):
                children.append(
                    _spawn(["worker", "--provider", provider, "--metrics-port", str(free_port())], env)
                )
        children.append(_spawn(["front", "--host", host, "--port", str(port)], env))
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        wait_http(f"http://{shown_host}:{port}/health/ready", watch=children)
        model = "gpt-4o-mini" if "openai" in providers else "claude-sonnet-4-5"
        print(
            "\nedge-agent is up. Try:\n\n"
            f"  curl -s http://{shown_host}:{port}/v1/chat/completions \\\n"
            f"    -H 'Authorization: Bearer {env['EDGE_MASTER_KEY']}' \\\n"
            "    -H 'Content-Type: application/json' \\\n"
            f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello!"}}]}}\'\n\n'
            f"Metrics: http://{shown_host}:{port}/metrics   Health: http://{shown_host}:{port}/health\n"
            "Ctrl-C stops everything.\n",
            flush=True,
        )
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
        print("edge-agent: a child process exited; stopping the stack", file=sys.stderr, flush=True)
        raise SystemExit(1)
    except _Stop:
        pass
    except RuntimeError as e:
        print(f"edge-agent: {e}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        if redis is not None:
            redis.stop()
