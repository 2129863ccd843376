"""LiteLLM proxy configs load unchanged: every form translated, every ignored key reported."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shared.config import ConfigError, LoadedConfig, load_settings, read_config

FULL = """\
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/MY_OPENAI_KEY
      api_base: os.environ/MY_OPENAI_BASE
      rpm: 100
      tpm: 20000
      timeout: 30
      stream_timeout: 60
      max_retries: 2
      order: 1
      weight: 3
      temperature: 0.2
    model_info: {id: abc, mode: chat, input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}
  - model_name: gpt-4o
    tpm: 5000
    rpm: 10
    litellm_params: {model: gpt-4o-mini, api_key: sk-inline-123, api_version: "2024-01-01"}
  - model_name: claude
    litellm_params: {model: claude-3-5-haiku-latest, api_base: "https://api.anthropic.com/v1/messages"}
  - model_name: local
    litellm_params: {model: hosted_vllm/meta-llama/Llama-3-8B, api_base: "http://vllm:8000/v1"}
  - model_name: vertex-gpt
    litellm_params: {model: vertex_ai/gemini-1.5-pro, api_base: "https://x.example.com", api_version: "2024"}
router_settings:
  routing_strategy: cost-based-routing
  num_retries: 2
  timeout: 45
  fallbacks: [{gpt-4o: [claude, vertex-gpt]}]
  context_window_fallbacks: [{claude: [gpt-4o]}]
  allowed_fails: 3
  cooldown_time: 20
  retry_after: 1.5
  redis_host: foo
litellm_settings:
  num_retries: 5
  request_timeout: 100
  drop_params: true
  success_callback: [langfuse]
  cache: true
  cache_params: {type: redis, ttl: 600, host: localhost}
general_settings:
  master_key: os.environ/LLM_MASTER
  database_url: postgres://x
environment_variables:
  MY_OPENAI_BASE: http://127.0.0.1:9999/v1
  LLM_MASTER: sk-master
"""


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> LoadedConfig:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return read_config(str(path), env or {})


def _refusal(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as e:
        _load(tmp_path, text, env)
    return str(e.value)


def test_every_litellm_params_form_becomes_a_deployment(tmp_path: Path) -> None:
    loaded = _load(tmp_path, FULL)
    by_id = {d.id: d for d in loaded.deployments}
    assert set(by_id) == {"gpt-4o#0", "gpt-4o#1", "claude#2", "local#3"}  # vertex_ai skipped
    first = by_id["gpt-4o#0"]
    assert (first.provider, first.model, first.base_url) == ("openai", "gpt-4o", "http://127.0.0.1:9999/v1")
    assert (first.api_key_env, first.api_key, first.rpm, first.tpm) == ("MY_OPENAI_KEY", "", 100, 20000)
    assert (first.timeout_s, first.stream_timeout_s, first.priority, first.weight) == (30, 60, 1, 3)
    assert (first.input_cost_per_1m, first.output_cost_per_1m) == pytest.approx((2.5, 10))
    second = by_id["gpt-4o#1"]  # bare name: LiteLLM's inference; entry-level rpm/tpm; inline key
    assert (second.provider, second.model, second.rpm, second.tpm) == ("openai", "gpt-4o-mini", 10, 5000)
    assert second.api_key == "sk-inline-123" and "sk-inline" not in repr(second)
    claude = by_id["claude#2"]
    assert (claude.provider, claude.base_url) == ("anthropic", "https://api.anthropic.com")
    local = by_id["local#3"]
    assert (local.provider, local.model, local.base_url) == (
        "openai",
        "meta-llama/Llama-3-8B",
        "http://vllm:8000/v1",
    )


def test_router_litellm_and_general_settings_are_mapped(tmp_path: Path) -> None:
    loaded = _load(tmp_path, FULL)
    router = loaded.router
    assert router.routing_strategy == "lowest-cost"
    assert router.fallbacks == {"gpt-4o": ["claude"]}  # the skipped model is dropped from it
    assert router.context_window_fallbacks == {"claude": ["gpt-4o"]}
    assert router.retry.max_attempts == 3  # router_settings.num_retries wins over litellm_settings'
    assert router.retry.min_backoff_ms == 1500
    assert (router.breaker.failures, router.breaker.window_s, router.breaker.cooldown_s) == (4, 60, 20)
    settings = loaded.settings
    assert (settings.master_key, settings.request_timeout_s) == ("sk-master", 45)
    assert (settings.enable_l2_cache, settings.l2_ttl_s) == (True, 600)


def test_every_ignored_key_and_skipped_model_is_named_by_path(tmp_path: Path) -> None:
    warnings = _load(tmp_path, FULL).warnings
    assert "litellm_settings.success_callback: ignored (no callbacks here; see tracing)" in warnings
    prefixes = {w.split(":")[0] for w in warnings}
    assert prefixes == {
        "litellm_settings.success_callback",
        "litellm_settings.cache_params.host",
        "model_list[0].litellm_params.temperature",
        "model_list[1].litellm_params.api_version",
        "model_list[4].litellm_params.model",
        "router_settings.redis_host",
        "router_settings.fallbacks.gpt-4o",
        "general_settings.database_url",
    }
    skipped = next(w for w in warnings if w.startswith("model_list[4]"))
    assert "'vertex-gpt'" in skipped and "'vertex_ai'" in skipped


@pytest.mark.parametrize(
    ("strategy", "mapped"),
    [
        ("simple-shuffle", "weighted"),
        ("least-busy", "least-latency"),
        ("latency-based-routing", "least-latency"),
        ("usage-based-routing", "weighted"),
        ("usage-based-routing-v2", "weighted"),
        ("cost-based-routing", "lowest-cost"),
        ("priority", "priority"),
    ],
)
def test_litellm_routing_strategies_map_to_the_closest_here(
    tmp_path: Path, strategy: str, mapped: str
) -> None:
    text = "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o}}\n"
    text += f"router_settings: {{routing_strategy: {strategy}}}\n"
    assert _load(tmp_path, text).router.routing_strategy == mapped


def test_litellm_settings_alone_and_per_deployment_max_retries(tmp_path: Path) -> None:
    text = """\
model_list:
  - {model_name: m, litellm_params: {model: anthropic/claude-sonnet-4-5, max_retries: 4}}
  - {model_name: n, litellm_params: {model: openai/gpt-4o}}
litellm_settings:
  request_timeout: 12
  fallbacks: [{m: [n]}]
  cache: true
  cache_params: {type: local, ttl: 30}
"""
    loaded = _load(tmp_path, text)
    assert loaded.router.retry.max_attempts == 5 and loaded.router.fallbacks == {"m": ["n"]}
    assert (loaded.settings.request_timeout_s, loaded.settings.enable_l2_cache) == (12, False)
    assert loaded.settings.l1_ttl_s == 30 and loaded.warnings == []
    text = text.replace("  request_timeout: 12\n", "  num_retries: 1\n").replace(
        "cache: true", "cache: false"
    )
    loaded = _load(tmp_path, text)
    assert loaded.router.retry.max_attempts == 2 and loaded.settings.enable_l2_cache is False


def test_settings_from_the_file_yield_to_the_environment(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(FULL)
    env = {"EDGE_CONFIG": str(path), "MY_OPENAI_BASE": "http://real:1/v1"}
    settings, models = load_settings(env)
    assert (settings.master_key, settings.request_timeout_s, settings.l2_ttl_s) == ("sk-master", 45, 600)
    by_id = models.by_id("gpt-4o#0")
    assert by_id is not None and by_id.base_url == "http://real:1/v1"  # the real environment wins
    env.update(EDGE_MASTER_KEY="other", EDGE_REQUEST_TIMEOUT="7", EDGE_L2_TTL="9")
    with caplog.at_level(logging.WARNING):
        settings, _ = load_settings(env)
    assert (settings.master_key, settings.request_timeout_s, settings.l2_ttl_s) == ("other", 7, 9)
    assert "EDGE_MASTER_KEY wins" in caplog.text


def test_one_warning_line_lists_every_ignored_key_and_strict_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(FULL.replace("gpt-4o", "gpt-4o-strict"))  # a line this process has not logged
    with caplog.at_level(logging.WARNING, logger="edge.config"):
        load_settings({"EDGE_CONFIG": str(path)})
    lines = [r.getMessage() for r in caplog.records if r.name == "edge.config"]
    assert len(lines) == 1 and lines[0].count("ignored") == 7 and "skipped" in lines[0]
    with pytest.raises(ConfigError, match=r"refused \(strict\).*success_callback"):
        load_settings({"EDGE_CONFIG": str(path), "EDGE_CONFIG_STRICT": "true"})


def test_refusals_carry_line_column_and_valid_values(tmp_path: Path) -> None:
    message = _refusal(tmp_path, "model_list: []\n")
    assert ":1:1: model_list: must list at least one model" in message
    text = "model_list:\n  - model_name: m\n    litellm_params:\n      model: gpt-4o\n      rpm: lots\n"
    assert "config.yaml:5:7: model_list[0].litellm_params.rpm: Expected `int | null`" in _refusal(
        tmp_path, text
    )
    text = "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o}}\nrouter_settings:\n"
    message = _refusal(tmp_path, text + "  routing_strategy: fastest\n")
    assert ":4:3: router_settings.routing_strategy: 'fastest' is not a routing strategy" in message
    assert "valid: priority, weighted, least-latency, lowest-cost, simple-shuffle" in message
    message = _refusal(tmp_path, "model_list:\n  - {model_name: m, provider: mistral}\n")
    assert ":2:21: model_list[0].provider: Invalid enum value 'mistral'; valid: openai, anthropic" in message
    assert "valid: openai, anthropic, gemini, azure" in message
    message = _refusal(tmp_path, "model_list:\n  - {model_name: m, litellm_params: {model: vertex_ai/g}}\n")
    assert "no model left to serve: model_list[0].litellm_params.model: model 'm'" in message
    message = _refusal(tmp_path, "model_list:\n  - {model_name: m, litellm_params: {model: hosted_vllm/x}}\n")
    assert "model_list[0].litellm_params: hosted_vllm/ models need an api_base" in message
    text = "model_list:\n  - {model_name: m, litellm_params: {model: gpt-4o, api_base: os.environ/NOPE}}\n"
    assert "os.environ/NOPE: $NOPE is not set" in _refusal(tmp_path, text)
    assert "is not valid YAML" in _refusal(tmp_path, "model_list: [\n")


def test_provider_inference_follows_litellm(tmp_path: Path) -> None:
    text = """\
model_list:
  - {model_name: a, litellm_params: {model: o3-mini}}
  - {model_name: b, litellm_params: {model: my-model, custom_llm_provider: openai, api_base: "http://h/v1"}}
  - {model_name: c, litellm_params: {model: text-completion-openai/gpt-3.5-turbo-instruct}}
  - {model_name: d, litellm_params: {model: llama3}}
  - {model_name: e, litellm_params: {model: lm_studio/qwen, api_base: "http://lm/v1"}}
"""
    loaded = _load(tmp_path, text)
    assert [(d.model_name, d.provider, d.model) for d in loaded.deployments] == [
        ("a", "openai", "o3-mini"),
        ("b", "openai", "my-model"),
        ("e", "openai", "qwen"),
    ]
    assert "legacy completions API" in loaded.warnings[0] and "cannot be told" in loaded.warnings[1]
