"""Bedrock through the gateway: a real bedrock worker signing with botocore for the fake Bedrock
runtime (which verifies every signature and validates every body with botocore's model), the
official openai SDK as client. Both config forms: the gateway's own and LiteLLM's."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import redis

from edge_agent.devstack import DevStack, Front
from shared import keyspace
from tests.integration.conftest import fake_stats, sample, scrape, sdk, wait_until

CONFIG = """\
model_list:
  - {model_name: nova, provider: bedrock, model: "us.amazon.nova-lite-v1:0", region: us-west-2,
     base_url: "URL"}
  - model_name: claude-br
    litellm_params:
      model: bedrock/converse/anthropic.claude-3-5-haiku-20241022-v1:0
      aws_region_name: os.environ/BR_REGION
      aws_access_key_id: os.environ/BR_KEY_ID
      aws_secret_access_key: os.environ/BR_SECRET
      aws_bedrock_runtime_endpoint: "URL"
  - model_name: wrong-secret
    litellm_params: {model: "bedrock/amazon.nova-micro-v1:0", aws_access_key_id: KEYID,
                     aws_secret_access_key: not-the-secret}
  - {model_name: flaky, provider: bedrock, model: "meta.llama3-8b-instruct-v1:0", base_url: "BUSY_URL"}
  - {model_name: nocreds, provider: bedrock, model: m,
     aws: {access_key_id_env: EDGE_TEST_UNSET_AWS_ID, secret_access_key_env: EDGE_TEST_UNSET_AWS_SECRET}}
  - {model_name: backup, provider: openai, model: gpt-4o-mini, base_url: "URL/v1"}
router_settings:
  fallbacks: {flaky: [backup]}
  retry: {max_attempts: 3, initial_backoff_ms: 10, max_backoff_ms: 20}
  breaker: {failures: 1000}
"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a0000000d49484452")).decode()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    logs = Path(tmp_path_factory.mktemp("bedrock"))
    dev = DevStack(log_dir=logs)
    try:
        dev.start_redis()
        dev.start_upstream()
        config = logs / "config.yaml"
        from edge_agent.fake_upstream.aws import FAKE_ACCESS_KEY_ID

        busy = dev.spawn_upstream("--error-rate", "1", "--error-status", "429")  # always throttles
        text = CONFIG.replace("BUSY_URL", busy).replace("URL", dev.upstream_url)
        text = text.replace("KEYID", FAKE_ACCESS_KEY_ID)
        config.write_text(text)
        dev.env_overrides.update(dev.bedrock_env)
        dev.env_overrides.update(
            {
                "EDGE_CONFIG": str(config),
                "AWS_REGION": "eu-west-1",  # for the deployments that name none
                "AWS_ENDPOINT_URL_BEDROCK_RUNTIME": dev.upstream_url,
                "BR_REGION": "us-east-1",
                "BR_KEY_ID": dev.bedrock_env["AWS_ACCESS_KEY_ID"],
                "BR_SECRET": dev.bedrock_env["AWS_SECRET_ACCESS_KEY"],
            }
        )
        dev.start_worker("bedrock")
        dev.start_worker("openai")
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def front(stack: DevStack) -> Front:
    return stack.front  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def client(front: Front) -> openai.OpenAI:
    return sdk(front)


def _user(text: str) -> list[dict[str, object]]:
    return [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]


def test_plain_answer_is_signed_translated_and_named(client: openai.OpenAI, stack: DevStack) -> None:
    prompt = f"hello bedrock {uuid.uuid4().hex[:8]}"
    raw = client.chat.completions.with_raw_response.create(
        model="nova", messages=_user(prompt), max_tokens=50
    )
    answer = raw.parse()
    assert raw.headers["x-edge-provider"] == "bedrock"
    assert answer.model == "us.amazon.nova-lite-v1:0"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.choices[0].message.content.startswith(f"Re: {prompt}")
    assert answer.usage is not None and answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert fake_stats(stack.upstream_url)["by_model"]["us.amazon.nova-lite-v1:0"] >= 1
    # LiteLLM's form: the converse/ route prefix dropped, its own key pair and region.
    other = client.chat.completions.create(model="claude-br", messages=_user(prompt))
    assert other.model == "anthropic.claude-3-5-haiku-20241022-v1:0"
    assert other.choices[0].message.content == answer.choices[0].message.content  # same prompt, same text


def test_requests_signed_while_claimed_verify(client: openai.OpenAI, stack: DevStack) -> None:
    """A small job's request is built and signed while its claim travels (edge_workers/ahead.py):
    the fake, checking every signature and the body's hash, accepts it; a job too large to ride
    in its wake entry is built after its claim, as before. (An idle worker is handed its jobs
    without a claim, edge_workers/handoff.py: its ticket is taken away here so that the job
    wakes it through the wake stream instead.)"""
    worker = next(w for w in stack.workers if w.provider == "bedrock")
    assert stack.redis is not None
    r = redis.Redis.from_url(stack.redis.url)
    name = "llm_edge_worker_built_ahead_total"
    before = sample(scrape(worker.metrics_url), name, provider="bedrock")
    for _ in range(5):  # only an idle worker builds ahead: one busy with an earlier test's job does not
        r.delete(keyspace.idle("bedrock"))
        small = client.chat.completions.create(model="nova", messages=_user(f"ahead {uuid.uuid4().hex[:8]}"))
        assert small.choices[0].message.content
        after = sample(scrape(worker.metrics_url), name, provider="bedrock")
        if after > before:
            break
    assert after == before + 1
    large = "words " * 1200 + uuid.uuid4().hex  # over WAKE_DATA_MAX_BYTES
    r.delete(keyspace.idle("bedrock"))
    answer = client.chat.completions.create(model="nova", messages=_user(large))
    assert answer.choices[0].message.content
    assert sample(scrape(worker.metrics_url), name, provider="bedrock") == after


def test_stream_matches_the_plain_answer(client: openai.OpenAI) -> None:
    messages = _user(f"stream me {uuid.uuid4().hex[:8]}")
    plain = client.chat.completions.create(model="nova", messages=messages)
    stream = client.chat.completions.create(
        model="nova",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"Cache-Control": "no-cache"},  # from the upstream, not replayed from cache
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "stop"
    ]
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )


def test_tool_call_round_trip(client: openai.OpenAI) -> None:
    messages = _user(f"weather in Paris? {uuid.uuid4().hex[:6]}")
    first = client.chat.completions.create(
        model="nova", messages=messages, tools=[WEATHER], tool_choice="required"
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)
    follow = [
        *messages,
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(model="nova", messages=follow, tools=[WEATHER])
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content
    streamed = client.chat.completions.create(
        model="nova", messages=_user(f"weather in Rome {uuid.uuid4().hex[:6]}"), tools=[WEATHER], stream=True
    )
    calls = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].function.name == "get_weather"
    assert "city" in json.loads("".join(tc.function.arguments or "" for tc in calls))


def test_image_data_url_is_sent_as_bytes(client: openai.OpenAI) -> None:
    content = [
        {"type": "text", "text": f"what is this? {uuid.uuid4().hex[:6]}"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
    ]
    answer = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as refused:
        link = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
        client.chat.completions.create(model="nova", messages=[{"role": "user", "content": link}])
    assert "data: URLs" in refused.value.message


def test_bedrock_errors_map_to_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="nova", messages=_user(f"x [[fake:status=400]] {uuid.uuid4()}"))
    assert bad.value.body["code"] == "validation_error" and "ValidationException" in bad.value.message
    with pytest.raises(openai.InternalServerError) as refused:
        client.chat.completions.create(model="wrong-secret", messages=_user(f"hi {uuid.uuid4()}"))
    assert refused.value.status_code == 502
    assert refused.value.body["code"] == "upstream_credentials_refused"
    with pytest.raises(openai.APIError):  # an exception inside the event stream, after chunks
        stream = client.chat.completions.create(
            model="nova", messages=_user(f"x [[fake:stream_error_after=2]] {uuid.uuid4()}"), stream=True
        )
        for _ in stream:
            pass


def test_throttled_request_is_retried(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="nova", messages=_user(f"busy [[fake:status=429]] [[fake:times=1]] {uuid.uuid4()}")
    )
    assert raw.headers["x-edge-provider"] == "bedrock"
    assert raw.headers["x-edge-attempts"] == "2"
    assert raw.parse().choices[0].message.content


def test_throttled_deployment_falls_back(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="flaky", messages=_user(f"hi {uuid.uuid4()}")
    )
    assert raw.headers["x-edge-provider"] == "openai"  # the fallback group answered
    assert raw.headers["x-edge-attempts"] == "2"
    assert raw.parse().choices[0].message.content


def test_a_deployment_without_credentials_is_skipped_and_named(front: Front, client: openai.OpenAI) -> None:
    def named() -> list[str]:
        providers = httpx.get(f"{front.url}/health", timeout=10).json()["providers"]
        return providers["bedrock"]["missing_keys"]  # type: ignore[no-any-return]

    assert wait_until(named, "the worker's report of missing AWS credentials") == ["EDGE_TEST_UNSET_AWS_ID"]
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="nocreds", messages=_user(f"hi {uuid.uuid4()}"))
    assert refused.value.status_code == 503 and refused.value.body["code"] == "upstream_key_missing"
    health = httpx.get(f"{front.url}/health", timeout=10).json()
    assert health["providers"]["bedrock"]["worker_alive"]


def test_anthropic_messages_clients_reach_bedrock(front: Front) -> None:
    import anthropic

    from edge_agent.devstack import MASTER_KEY

    client = anthropic.Anthropic(base_url=front.url, api_key=MASTER_KEY, max_retries=0)
    prompt = f"via messages {uuid.uuid4().hex[:8]}"
    message = client.messages.create(
        model="nova", max_tokens=64, messages=[{"role": "user", "content": prompt}]
    )
    assert message.content[0].type == "text" and message.content[0].text.startswith(f"Re: {prompt}")
    assert message.stop_reason == "end_turn"
    with client.messages.stream(
        model="nova", max_tokens=64, messages=[{"role": "user", "content": prompt + " streamed"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text.startswith(f"Re: {prompt} streamed")
