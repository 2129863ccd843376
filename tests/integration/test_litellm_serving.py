"""LiteLLM proxy configs, unchanged, served through the fake upstream; rpm limits; config check."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from edge_agent.devstack import DevStack, Front
from edge_agent.redis_server import RedisServer

UPSTREAM_KEY = "sk-upstream-litellm"
MASTER = "sk-litellm-master"

# Every form of the file at once: prefixed, bare and OpenAI-compatible models, keys from the
# environment, from environment_variables and inline, an unserved provider, LiteLLM's router,
# litellm and general settings.
FULL = """\
model_list:
  - model_name: prefixed
    litellm_params:
      model: openai/model-prefixed
      api_base: os.environ/FAKE_OPENAI_BASE
      api_key: os.environ/FAKE_UPSTREAM_KEY
      rpm: 1000
      tpm: 1000000
      timeout: 30
      stream_timeout: 30
      max_retries: 1
      order: 1
      weight: 2
    model_info: {mode: chat, input_cost_per_token: 0.000001}
  - model_name: bare
    tpm: 100000
    litellm_params: {model: gpt-4o-mini, api_base: "HOST_URL/v1", api_key: sk-upstream-litellm}
  - model_name: claude
    litellm_params:
      {model: claude-3-5-haiku-latest, api_base: "HOST_URL/v1/messages", api_key: sk-upstream-litellm}
  - model_name: vllm
    litellm_params: {model: hosted_vllm/org/model-vllm, api_base: "HOST_URL/v1", api_key: sk-upstream-litellm}
  - model_name: on-vertex
    litellm_params: {model: vertex_ai/gemini-1.5-pro, api_base: "https://x.example.com"}
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 60
  fallbacks: [{prefixed: [bare, on-vertex]}]
  context_window_fallbacks: [{bare: [claude]}]
  allowed_fails: 3
  cooldown_time: 10
  retry_after: 0
litellm_settings:
  request_timeout: 60
  drop_params: true
  success_callback: [langfuse]
  cache: true
  cache_params: {type: redis, ttl: 120}
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
environment_variables:
  FAKE_UPSTREAM_KEY: sk-upstream-litellm
  LITELLM_MASTER_KEY: sk-litellm-master
"""

RPM = """\
model_list:
  - model_name: limited
    litellm_params: {model: openai/model-first, api_base: "HOST_URL/v1", rpm: 2, order: 1}
  - model_name: limited
    litellm_params: {model: openai/model-second, api_base: "HOST_URL/v1", rpm: 2, order: 2}
"""


class Gateway:
    """A private Redis and a fake upstream that accepts only UPSTREAM_KEY."""

    def __init__(self, base: DevStack, tmp: Path) -> None:
        self.base, self.tmp = base, tmp
        self.redis = RedisServer().start()
        self.upstream = base.spawn_upstream("--require-key", UPSTREAM_KEY)

    def config(self, text: str) -> Path:
        path = self.tmp / f"litellm-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text.replace("HOST_URL", self.upstream))
        return path

    def start(self, text: str, **env: str) -> Front:
        base_env = {k: v for k, v in self.base.env.items() if k != "EDGE_MASTER_KEY"}
        full = {**base_env, "REDIS_URL": self.redis.url, "EDGE_CONFIG": str(self.config(text)), **env}
        self.base.start_worker("openai", full)
        self.base.start_worker("anthropic", full)
        return self.base.start_front(full)


@pytest.fixture
def gateway(stack: DevStack, tmp_path: Path) -> Iterator[Gateway]:
    g = Gateway(stack, tmp_path)
    try:
        yield g
    finally:
        g.redis.stop()


def _ask(front: Front, model: str, key: str = MASTER):  # type: ignore[no-untyped-def]
    client = openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0, timeout=30)
    messages = [{"role": "user", "content": f"hi {uuid.uuid4().hex}"}]
    return client.chat.completions.with_raw_response.create(model=model, messages=messages)


def test_a_litellm_config_is_served_unchanged(gateway: Gateway) -> None:
    front = gateway.start(FULL, FAKE_OPENAI_BASE=f"{gateway.upstream}/v1")
    served = {
        "prefixed": ("openai", "model-prefixed"),
        "bare": ("openai", "gpt-4o-mini"),
        "claude": ("anthropic", "claude-3-5-haiku-latest"),
        "vllm": ("openai", "org/model-vllm"),
    }
    for model, (provider, upstream_model) in served.items():
        raw = _ask(front, model)  # the master key comes from general_settings via environment_variables
        assert (raw.headers["x-edge-provider"], raw.headers["x-edge-model"]) == (provider, upstream_model)
        assert raw.parse().choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        _ask(front, "on-vertex")  # skipped: its provider is not served here
    with pytest.raises(openai.AuthenticationError):
        _ask(front, "bare", key="sk-edge-test-key")


def test_rpm_spills_to_the_next_deployment_then_429(gateway: Gateway) -> None:
    if time.time() % 60 > 45:  # the counts are per minute: start well inside one
        time.sleep(61 - time.time() % 60)
    front = gateway.start(RPM, EDGE_MASTER_KEY=MASTER, OPENAI_API_KEY=UPSTREAM_KEY)
    models = [_ask(front, "limited").headers["x-edge-model"] for _ in range(4)]
    assert models == ["model-first", "model-first", "model-second", "model-second"]
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(front, "limited")
    assert refused.value.code == "rate_limited"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def _check(path: Path, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "config", "check", str(path), *flags],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_config_check_prints_what_would_be_served_and_exits_by_the_outcome(gateway: Gateway) -> None:
    path = gateway.config(FULL)
    result = _check(path, FAKE_OPENAI_BASE="http://127.0.0.1:1/v1")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "4 models, 4 deployments" in out and "result: the gateway would start" in out
    assert "-> openai model-prefixed at http://127.0.0.1:1/v1; key $FAKE_UPSTREAM_KEY (set)" in out
    assert "rpm 1000, tpm 1000000, timeout 30s" in out and "key written in the file" in out
    assert "strategy: weighted" in out and "fallbacks: prefixed -> bare" in out
    assert "litellm_settings.success_callback: ignored (no callbacks here; see tracing)" in out
    assert "model 'on-vertex' (vertex_ai/gemini-1.5-pro) skipped" in out and "warnings (3):" in out

    strict = _check(path, "--strict", FAKE_OPENAI_BASE="http://127.0.0.1:1/v1")
    assert strict.returncode == 1 and "error: --strict: 3 warnings" in strict.stdout

    missing = _check(path)  # api_base: os.environ/FAKE_OPENAI_BASE is not set anywhere
    assert missing.returncode == 1 and ":5:7: model_list[0].litellm_params.api_base" in missing.stdout

    empty = gateway.tmp / "empty.yaml"
    empty.write_text("model_list: []\n")
    result = _check(empty)
    assert (
        result.returncode == 1 and "empty.yaml:1:1: model_list: must list at least one model" in result.stdout
    )
