"""Bedrock deployments in EDGE_CONFIG: the gateway's form and LiteLLM's, regions, endpoints and
credentials; `bedrock/<model id>` without a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.aws_config import AwsCredentials
from shared.config import ConfigError, ModelTable, load_settings, read_config

CONFIG = """\
model_list:
  - {model_name: nova, provider: bedrock, model: "amazon.nova-lite-v1:0", region: us-west-2}
  - {model_name: nova-env, provider: bedrock, model: "amazon.nova-lite-v1:0",
     aws: {profile: prod, session_token_env: TOKEN}}
  - {model_name: nova-proxy, provider: bedrock, model: m, base_url: "https://vpce.example/"}
  - model_name: claude
    litellm_params:
      model: bedrock/converse/us.anthropic.claude-3-5-haiku-20241022-v1:0
      aws_region_name: os.environ/CLAUDE_REGION
      aws_access_key_id: os.environ/CLAUDE_KEY_ID
      aws_secret_access_key: os.environ/CLAUDE_SECRET
      aws_bedrock_runtime_endpoint: https://bedrock-runtime-fips.us-east-1.amazonaws.com
  - model_name: inline
    litellm_params: {model: "bedrock/meta.llama3-8b-instruct-v1:0", aws_access_key_id: AKIDINLINE,
                     aws_secret_access_key: inline-secret, aws_profile_name: dev, api_key: nope}
  - {model_name: gpt, litellm_params: {model: openai/gpt-4o, aws_region_name: eu-west-1}}
  - {model_name: imported, litellm_params: {model: "bedrock/llama/arn:aws:bedrock:r:1:imported-model/x"}}
  - {model_name: profile-arn, litellm_params: {model: "bedrock/arn:aws:bedrock:r:1:inference-profile/y"}}
"""
ENV = {"AWS_DEFAULT_REGION": "eu-central-1", "CLAUDE_REGION": "us-east-1"}


def _load(tmp_path: Path, text: str, env: dict[str, str]):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return read_config(str(path), env)


def test_both_forms_regions_endpoints_and_credentials(tmp_path: Path) -> None:
    loaded = _load(tmp_path, CONFIG, ENV)
    by_name = {d.model_name: d for d in loaded.deployments}
    nova = by_name["nova"]
    assert (nova.provider, nova.region, nova.base_url) == (
        "bedrock",
        "us-west-2",
        "https://bedrock-runtime.us-west-2.amazonaws.com",
    )
    assert nova.aws is None and nova.api_key_env == "AWS_ACCESS_KEY_ID"  # the default chain
    env_one = by_name["nova-env"]
    assert env_one.region == "eu-central-1"  # AWS_DEFAULT_REGION
    assert env_one.aws == AwsCredentials(profile="prod", session_token_env="TOKEN")
    assert by_name["nova-proxy"].base_url == "https://vpce.example"
    claude = by_name["claude"]
    assert claude.model == "us.anthropic.claude-3-5-haiku-20241022-v1:0"  # converse/ route dropped
    assert claude.region == "us-east-1"
    assert claude.base_url == "https://bedrock-runtime-fips.us-east-1.amazonaws.com"
    assert claude.aws == AwsCredentials(
        access_key_id_env="CLAUDE_KEY_ID", secret_access_key_env="CLAUDE_SECRET"
    )
    assert claude.api_key_env == "CLAUDE_KEY_ID"  # what /health names when the variable is unset
    inline = by_name["inline"]
    assert inline.aws == AwsCredentials(
        profile="dev", access_key_id="AKIDINLINE", secret_access_key="inline-secret"
    )
    assert "inline-secret" not in repr(inline)
    warnings = " ".join(loaded.warnings)
    assert "model_list[4].litellm_params.api_key: ignored (Bedrock requests are signed" in warnings
    assert "model_list[5].litellm_params.aws_region_name: ignored (only bedrock/ models use it)" in warnings
    assert "model_list[6].litellm_params.model: model 'imported'" in warnings and "Converse" in warnings
    assert by_name["profile-arn"].model == "arn:aws:bedrock:r:1:inference-profile/y"


def test_the_standard_endpoint_variable_and_refusals(tmp_path: Path) -> None:
    text = "model_list:\n  - {model_name: a, provider: bedrock, model: m, region: ap-south-1}\n"
    loaded = _load(tmp_path, text, {"AWS_ENDPOINT_URL_BEDROCK_RUNTIME": "http://localhost:4566"})
    assert loaded.deployments[0].base_url == "http://localhost:4566"
    with pytest.raises(ConfigError) as no_region:
        _load(tmp_path, "model_list:\n  - {model_name: a, provider: bedrock, model: m}\n", {})
    assert "model_list[0]: region: not set" in str(no_region.value)
    with pytest.raises(ConfigError) as misplaced:
        _load(tmp_path, "model_list:\n  - {model_name: a, provider: openai, region: us-east-1}\n", {})
    assert "only bedrock deployments take it" in str(misplaced.value)
    with pytest.raises(ConfigError) as unknown:
        _load(tmp_path, "model_list:\n  - {model_name: a, provider: bedrock, region: r, aws: {key: x}}\n", {})
    assert "aws" in str(unknown.value)


def test_without_a_file_bedrock_serves_only_when_asked() -> None:
    _, plain = load_settings({"AWS_REGION": "us-east-1"})  # as on every ECS task: not an opt-in
    assert "bedrock" not in plain.providers() and plain.group("bedrock/amazon.nova-lite-v1:0") == []
    _, table = load_settings({"EDGE_BEDROCK_REGION": "eu-west-3"})
    assert "bedrock" in table.providers()
    [d] = table.group("bedrock/amazon.nova-lite-v1:0")
    assert (d.provider, d.model, d.region) == ("bedrock", "amazon.nova-lite-v1:0", "eu-west-3")
    assert d.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"
    assert isinstance(table, ModelTable) and "AWS_ACCESS_KEY_ID" not in table.key_variables()
    assert any(provider == "bedrock" for _, provider in table.public_models())


def test_bedrock_answers_are_priced_from_the_aws_table() -> None:
    from shared.pricing import cost_usd
    from shared.wire import Usage

    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert cost_usd("bedrock", "us.amazon.nova-lite-v1:0", usage, None) == pytest.approx(0.06 + 0.24)
