"""Azure OpenAI's URLs and auth, the OpenAI-compatible switches, lenient error bodies, and the
config forms (the gateway's and LiteLLM's) for gemini, azure and hosted compatible services."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest

from edge_workers.providers.azure import AzureAdapter
from edge_workers.providers.openai import OpenAIAdapter, lenient_error
from shared.config import ConfigError, Deployment, load_config_file

BODY: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def azure(**fields: Any) -> Deployment:
    base = dict(
        model_name="m",
        provider="azure",
        model="my-dep",
        base_url="https://r.openai.azure.com",
        api_key_env="K",
    )
    return Deployment(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({}, "https://r.openai.azure.com/openai/deployments/my-dep/chat/completions?api-version=2024-10-21"),
        (
            {"api_version": "2025-01-01-preview"},
            "https://r.openai.azure.com/openai/deployments/my-dep/chat/completions?api-version=2025-01-01-preview",
        ),
        ({"api_version": "v1"}, "https://r.openai.azure.com/openai/v1/chat/completions"),
        (
            {"api_version": "preview"},
            "https://r.openai.azure.com/openai/v1/chat/completions?api-version=preview",
        ),
        (
            {"base_url": "https://r.openai.azure.com/openai/v1"},
            "https://r.openai.azure.com/openai/v1/chat/completions",
        ),
    ],
)
def test_azure_urls(fields: dict[str, Any], url: str) -> None:
    assert AzureAdapter().build_request(BODY, "my-dep", azure(**fields), "key").url == url


def test_azure_auth_headers() -> None:
    assert AzureAdapter().build_request(BODY, "my-dep", azure(), "key").headers["api-key"] == "key"
    bearer = AzureAdapter().build_request(BODY, "my-dep", azure(auth="bearer"), "tok").headers
    assert bearer["Authorization"] == "Bearer tok" and "api-key" not in bearer


def test_azure_stream_skips_the_prompt_filter_chunk() -> None:
    translator = AzureAdapter().stream_translator()
    head = {"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": [{}]}
    assert translator.feed("", json.dumps(head).encode()) == []


def compat(**fields: Any) -> Deployment:
    return Deployment("m", "openai", "m", "http://vllm:8000/v1", "K", **fields)


def sent(deployment: Deployment, stream: bool, **fields: Any) -> dict[str, Any]:
    request = OpenAIAdapter().build_request({**BODY, **fields}, "m", deployment, "k", stream)
    out: dict[str, Any] = msgspec.json.decode(request.body)
    return out


def test_compat_switches() -> None:
    assert sent(compat(), True)["stream_options"] == {"include_usage": True}
    quiet = sent(compat(stream_options=False), True, stream_options={"include_usage": True})
    assert "stream_options" not in quiet and quiet["stream"] is True
    assert sent(compat(max_tokens_field="max_tokens"), False, max_completion_tokens=9) == {
        **BODY,
        "max_tokens": 9,
    }
    renamed = sent(compat(max_tokens_field="max_completion_tokens"), False, max_tokens=9)
    assert renamed == {**BODY, "max_completion_tokens": 9}
    assert sent(compat(), False, max_tokens=9)["max_tokens"] == 9  # no switch: as sent


@pytest.mark.parametrize(
    ("status", "body", "message", "code"),
    [
        (429, b'{"error": {"code": "429", "message": "Requests exceeded"}}', "Requests exceeded", None),
        (
            400,
            b'{"error": {"code": "content_filter", "message": "filtered", "param": "prompt"}}',
            "filtered",
            "content_filter",
        ),
        (400, b'{"object": "error", "message": "bad", "type": "BadRequestError", "code": 400}', "bad", None),
        (404, b'{"error": "model not found"}', "model not found", None),
        (500, b"<html>", "upstream answered 500: <html>", None),
    ],
)
def test_lenient_errors(status: int, body: bytes, message: str, code: str | None) -> None:
    detail = lenient_error(status, body)
    assert (detail.message, detail.code) == (message, code)


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[Deployment]:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_config_file(str(path), env or {})[0]


def test_native_config(tmp_path: Path) -> None:
    g, a, v = load(
        tmp_path,
        """
model_list:
  - {model_name: fast, provider: gemini, model: gemini-2.5-flash}
  - {model_name: corp, provider: azure, model: gpt4o-prod, base_url: "https://r.openai.azure.com/",
     api_version: 2025-01-01-preview, auth: bearer, api_key_env: AZURE_TOKEN}
  - {model_name: local, provider: openai, base_url: "http://vllm:8000/v1", stream_options: false,
     max_tokens_field: max_tokens}
""",
    )
    assert (g.base_url, g.api_key_env) == (
        "https://generativelanguage.googleapis.com/v1beta",
        "GEMINI_API_KEY",
    )
    assert (a.base_url, a.api_version, a.auth, a.api_key_env) == (
        "https://r.openai.azure.com",
        "2025-01-01-preview",
        "bearer",
        "AZURE_TOKEN",
    )
    assert (v.stream_options, v.max_tokens_field) == (False, "max_tokens")
    with pytest.raises(ConfigError, match="azure needs a base_url"):
        load(tmp_path, "model_list: [{model_name: x, provider: azure}]")
    assert load(
        tmp_path, "model_list: [{model_name: x, provider: azure}]", {"AZURE_OPENAI_ENDPOINT": "https://e"}
    )


def test_litellm_config(tmp_path: Path) -> None:
    g, a, t, m = load(
        tmp_path,
        """
model_list:
  - model_name: g
    litellm_params: {model: gemini/gemini-2.0-flash, api_key: os.environ/GOOGLE_KEY}
  - model_name: a
    litellm_params: {model: azure/prod-dep, api_base: "https://r.openai.azure.com", api_version: "2024-10-21",
                     azure_ad_token: os.environ/AZ_TOKEN}
  - model_name: t
    litellm_params: {model: together_ai/meta-llama/Llama-3-8b-chat-hf}
  - model_name: m
    litellm_params: {model: mistral/mistral-small-latest, api_key: os.environ/MY_MISTRAL}
""",
    )
    assert (g.provider, g.model, g.api_key_env) == ("gemini", "gemini-2.0-flash", "GOOGLE_KEY")
    assert (a.provider, a.model, a.api_version, a.auth, a.api_key_env) == (
        "azure",
        "prod-dep",
        "2024-10-21",
        "bearer",
        "AZ_TOKEN",
    )
    assert (t.provider, t.base_url, t.api_key_env, t.max_tokens_field) == (
        "openai",
        "https://api.together.xyz/v1",
        "TOGETHERAI_API_KEY",
        "max_tokens",
    )
    assert (m.base_url, m.api_key_env, m.stream_options) == ("https://api.mistral.ai/v1", "MY_MISTRAL", False)
    (plain,) = load(
        tmp_path,
        "model_list: [{model_name: a, litellm_params: {model: azure/d}}]",
        {"AZURE_API_BASE": "https://from-env.openai.azure.com"},
    )
    assert (plain.base_url, plain.api_key_env) == ("https://from-env.openai.azure.com", "AZURE_API_KEY")


def test_gemini_and_azure_answers_are_priced() -> None:
    from shared.pricing import cost_usd
    from shared.wire import Usage

    usage = Usage(prompt_tokens=1000, completion_tokens=1000, total_tokens=2000)
    assert cost_usd("gemini", "gemini-2.5-flash", usage, None) > 0
    assert cost_usd("azure", "gpt-4o-mini", usage, None) == cost_usd("openai", "gpt-4o-mini", usage, None)
