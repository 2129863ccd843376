"""`edge-agent up` on a machine with nothing configured, and bad configuration at start."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from edge_agent.devstack import DevStack
from edge_agent.probes import wait_http
from edge_agent.redis_server import RedisServer, free_port
from shared.config import API_KEY_ENV
from tests.integration.conftest import wait_until

CONFIG_VARS = ("REDIS_URL", *API_KEY_ENV.values(), "AZURE_OPENAI_ENDPOINT", "EDGE_MASTER_KEY", "EDGE_CONFIG")


def _bare_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CONFIG_VARS and not k.endswith("_BASE_URL")}


def _start_up(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """`edge-agent up` with its output read until it says it is up (or ends)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_agent", "up", *args],
        env={**_bare_env(), "LOG_LEVEL": "WARNING", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,  # as a shell runs it: Ctrl-C signals this whole group
    )
    assert proc.stdout is not None
    output = ""
    while "Ctrl-C stops everything" not in output:
        line = proc.stdout.readline()  # bounded: `up` gives up after 60 s and prints why
        if not line:
            break
        output += line
    return proc, output


def _curl_model_and_key(output: str) -> tuple[str, str]:
    key = re.search(r"Authorization: Bearer (\S+)'", output).group(1)  # type: ignore[union-attr]
    model = re.search(r'"model": "([^"]+)"', output).group(1)  # type: ignore[union-attr]
    return model, key


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(child) for child in f.read().split()]


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has exited
    except FileNotFoundError:
        return True


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_up_starts_everything_prints_a_working_curl_and_stops_on_ctrl_c() -> None:
    port = free_port()
    proc, output = _start_up("--port", str(port))
    try:
        assert "edge-agent is up" in output, output
        model, key = _curl_model_and_key(output)
        assert model == "gpt-4o-mini"
        redis_port = int(re.search(r"redis-server on redis://127\.0\.0\.1:(\d+)", output).group(1))  # type: ignore[union-attr]
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        # All right away: `up` is ready only once every provider's worker is.
        for model in ("gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"):
            answer = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Hello!"}]
            )
            assert answer.choices[0].message.content
        # Each worker's metrics port is printed and answers with that worker's metrics.
        printed = dict(re.findall(r"(\w+) worker \(pid \d+\): (http://\S+/metrics)", output))
        assert set(printed) == {"openai", "anthropic", "gemini"}, output  # no model name routes to azure
        for url in printed.values():
            assert "llm_edge_queue_wait_ms" in httpx.get(url, timeout=10).text
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert rest.strip().splitlines()[-1] == "edge-agent: stopped", rest
    assert "ConnectionError" not in rest, rest
    # Every child is gone: nothing listens on the front's or Redis's port any more.
    for p in (port, redis_port):
        assert _port_free(p)


def test_up_with_two_front_processes_serves_from_both_and_stops_them_all() -> None:
    port = free_port()
    proc, output = _start_up("--port", str(port), "--front-processes", "2")
    fronts: list[int] = []
    try:
        assert "edge-agent is up" in output, output
        model, key = _curl_model_and_key(output)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}])

        def ids() -> set[str]:  # a new connection each: the kernel picks the process
            return {
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["front_id"] for _ in range(20)
            }

        def both() -> set[str] | None:
            found = ids()
            return found if len(found) == 2 else None

        seen = wait_until(both, "both front processes")
        fronts = [int(front_id.split("-")[-2]) for front_id in seen]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert rest.strip().splitlines()[-1] == "edge-agent: stopped", rest
    assert fronts and all(_gone(pid) for pid in fronts)
    assert _port_free(port)


def test_up_and_front_refuse_a_port_in_use_at_once() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        up = subprocess.run(
            [sys.executable, "-m", "edge_agent", "up", "--port", str(port)],
            env=_bare_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert up.returncode == 1
        assert f"port {port} on 127.0.0.1 is already in use" in up.stderr, up.stderr
        assert "edge-agent is up" not in up.stdout and "redis-server" not in up.stdout
        front = _front_exit({"HOST": "127.0.0.1", "PORT": str(port)})
        assert front.returncode == 2
        assert f"port {port} on 127.0.0.1 is already in use" in front.stderr, front.stderr


def test_up_with_a_config_prints_a_served_model_and_its_children_die_with_it(
    stack: DevStack, tmp_path: Path
) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(
        "model_list:\n"
        f"  - {{model_name: house-model, provider: anthropic, model: claude-3-5-haiku-latest,\n"
        f"     base_url: {stack.upstream_url}, api_key_env: HOUSE_KEY}}\n"
    )
    port = free_port()
    proc, output = _start_up("--port", str(port), env={"EDGE_CONFIG": str(config), "HOUSE_KEY": "k"})
    try:
        assert "edge-agent is up" in output, output
        model, key = _curl_model_and_key(output)
        assert model == "house-model"
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        assert client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert re.findall(r"(\w+) worker \(pid", output) == ["anthropic"], output
        children = _children(proc.pid)
        assert len(children) == 3, output  # redis-server, one worker, the front
    finally:
        proc.kill()  # SIGKILL: `up` cannot stop anything itself
        proc.wait(60)
        proc.stdout.close()  # type: ignore[union-attr]  # (the children may hold its other end)
    wait_until(lambda: all(_gone(pid) for pid in children), "the children of a killed `up` to exit")
    wait_until(lambda: _port_free(port), "the front's port to be free")


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
