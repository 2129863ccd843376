"""`edge-agent up` on a machine with nothing configured, and bad configuration at start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from edge_agent.devstack import DevStack
from edge_agent.probes import wait_http
from edge_agent.redis_server import RedisServer, free_port

CONFIG_VARS = ("REDIS_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "EDGE_MASTER_KEY", "EDGE_CONFIG")


def _bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.endswith("_BASE_URL")}


def test_up_starts_everything_prints_a_working_curl_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "up", "--port", str(port)],
        env={**_bare_env(), "LOG_LEVEL": "WARNING"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in output and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output += line
        assert "edge-agent is up" in output, output
        key = re.search(r"Authorization: Bearer (\S+)'", output).group(1)  # type: ignore[union-attr]
        redis_port = int(re.search(r"redis-server on redis://127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        for model in ("gpt-4o-mini", "claude-sonnet-4-5"):
            answer = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello!"}]
            )
            assert answer.choices[0].message.content
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    # Every child is gone: nothing listens on the front's or Redis's port any more.
    for p in (port, redis_port):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", p)) != 0


def _front_exit(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "front"],
        env={**_bare_env(), "EDGE_MASTER_KEY": "k", "PORT": str(free_port()), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_bad_config_stops_the_process_with_one_line_naming_the_field(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text("model_list:\n  - model_name: house\n    provider: mistral\n")
    result = _front_exit({"EDGE_CONFIG": str(config)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model_list[0].provider" in lines[0], result.stderr

    result = _front_exit({"PORT": "eighty"})
    assert result.returncode == 2 and "PORT" in result.stderr and len(result.stderr.strip().splitlines()) == 1

    result = _front_exit({"EDGE_MASTER_KEY": ""})
    assert result.returncode == 2 and "EDGE_MASTER_KEY" in result.stderr


def test_config_file_routes_public_names_to_deployments(stack: DevStack, tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: house-model\n"
        "    provider: anthropic\n"
        "    model: claude-3-5-haiku-latest\n"
        "  - model_name: legacy\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        "      api_key: os.environ/OPENAI_API_KEY\n"
    )
    private = RedisServer().start()
    try:
        env = {**stack.env, "REDIS_URL": private.url, "EDGE_CONFIG": str(config)}
        stack.start_worker("openai", env)
        stack.start_worker("anthropic", env)
        front = stack.start_front(env)
        client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=env["EDGE_MASTER_KEY"], max_retries=0)
        assert {m.id for m in client.models.list()} == {"house-model", "legacy"}
        answer = client.chat.completions.create(
            model="house-model", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.model == "claude-3-5-haiku-latest"
        answer = client.chat.completions.create(model="legacy", messages=[{"role": "user", "content": "hi"}])
        assert answer.model == "gpt-4o-mini"
        try:
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        except openai.NotFoundError:
            pass
        else:
            raise AssertionError("a config file lists the only models served")
        wait_http(f"{front.url}/health/live")
        assert httpx.get(f"{front.url}/health").json()["status"] == "ok"
    finally:
        private.stop()


def test_starts_move_to_another_port_when_the_free_port_was_taken_first(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import edge_agent.devstack
    import edge_agent.redis_server

    with socket.socket() as taken:  # another process took the "free" port before the child bound it
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        racing = {"left": 0}

        def free_port_racing() -> int:  # the next pick loses the race, unless it is already a retry
            if racing["left"] > 0:
                racing["left"] -= 1
                return taken_port
            return free_port()

        monkeypatch.setattr(edge_agent.redis_server, "free_port", free_port_racing)
        monkeypatch.setattr(edge_agent.devstack, "free_port", free_port_racing)
        dev = DevStack(log_dir=tmp_path)
        try:
            racing["left"] = 2  # RedisServer() picks, then its first retry
            dev.start_redis()
            assert racing["left"] == 0 and dev.redis is not None and dev.redis.port != taken_port
            racing["left"] = 1
            dev.start_upstream()
            assert racing["left"] == 0 and dev.upstream_port != taken_port
            assert httpx.get(f"{dev.upstream_url}/health").json() == {"status": "ok"}
        finally:
            dev.stop()
