"""The Bedrock adapter: request mapping (checked against botocore's own model of Converse),
answers, stop reasons, usage, errors, the event-stream translation and SigV4 signing."""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import random
from typing import Any

import botocore.auth
import msgspec
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, RefreshableCredentials
from botocore.eventstream import EventStreamBuffer
from botocore.session import get_session
from botocore.validate import ParamValidator

from edge_agent.fake_upstream import aws
from edge_workers.providers import bedrock_auth
from edge_workers.providers import bedrock_wire as bw
from edge_workers.providers.base import StreamError
from edge_workers.providers.bedrock import BedrockAdapter, model_url
from edge_workers.providers.bedrock_auth import host_of
from edge_workers.providers.bedrock_request import to_converse_request
from edge_workers.providers.bedrock_stream import EventStreamParser
from shared.aws_config import AwsCredentials
from shared.chunks import ChunkAssembler
from shared.config import Deployment
from shared.errors import EdgeError
from shared.sse import EventTooLarge

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n-not-really-an-image").decode()
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ADAPTER = BedrockAdapter()
SOURCE = AwsCredentials(access_key_id=aws.FAKE_ACCESS_KEY_ID, secret_access_key=aws.FAKE_SECRET_ACCESS_KEY)


def _deployment(**kw: Any) -> Deployment:
    fields: dict[str, Any] = {
        "model_name": "m",
        "provider": "bedrock",
        "model": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "base_url": "http://127.0.0.1:9",
        "api_key_env": "AWS_ACCESS_KEY_ID",
        "id": "m#0",
        "region": "us-east-1",
        "aws": SOURCE,
    }
    return Deployment(**{**fields, **kw})


def _converse(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(to_converse_request(body))
    return out


def _valid_for_botocore(request: dict[str, Any]) -> None:
    """What boto3 itself checks before sending: the request fits the Converse API's model."""
    params = json.loads(json.dumps(request))
    for message in params["messages"]:
        for block in message["content"]:
            if "image" in block:
                block["image"]["source"]["bytes"] = base64.b64decode(block["image"]["source"]["bytes"])
    shape = get_session().get_service_model("bedrock-runtime").operation_model("Converse").input_shape
    report = ParamValidator().validate({**params, "modelId": "m"}, shape)
    assert not report.has_errors(), report.generate_report()


def test_messages_system_images_and_inference_config() -> None:
    out = _converse(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
                {"role": "user", "content": "first"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                },
                {"role": "assistant", "content": "Sure:  "},
            ],
            "max_tokens": 64,
            "temperature": 0.3,
            "stop": "END",
            "top_k": 5,
        }
    )
    _valid_for_botocore(out)
    assert out["system"] == [{"text": "Be brief."}, {"text": "No lists."}]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant"]  # same-role turns merged
    user = out["messages"][0]["content"]
    assert user[0] == {"text": "first"} and user[1] == {"text": "look"}
    assert user[2] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert out["messages"][1]["content"] == [{"text": "Sure:"}]  # a prefill loses trailing space
    assert out["inferenceConfig"] == {"maxTokens": 64, "temperature": 0.3, "stopSequences": ["END"]}
    assert out["additionalModelRequestFields"] == {"top_k": 5}


def test_tools_calls_and_results() -> None:
    out = _converse(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call.1/x",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call.1/x", "content": "rain"},
            ],
            "tools": [WEATHER],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        }
    )
    _valid_for_botocore(out)
    use = out["messages"][1]["content"][0]["toolUse"]
    assert use == {"toolUseId": "call_1_x", "name": "get_weather", "input": {"city": "Oslo"}}
    result = out["messages"][2]["content"][0]["toolResult"]
    assert result == {"toolUseId": "call_1_x", "content": [{"text": "rain"}]}
    assert out["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"] == {
        "json": WEATHER["function"]["parameters"]
    }
    assert out["toolConfig"]["toolChoice"] == {"tool": {"name": "get_weather"}}
    required = _converse(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER],
            "tool_choice": "required",
        }
    )
    assert required["toolConfig"]["toolChoice"] == {"any": {}}
    none = _converse(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER],
            "tool_choice": "none",
        }
    )
    assert "toolConfig" not in none  # Converse has no "none": the tools are left out


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%%%"}}],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": f"data:image/tiff;base64,{PNG}"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
        ),
    ],
)
def test_what_converse_cannot_honour_is_a_400(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(EdgeError) as refused:
        to_converse_request(body)
    assert refused.value.status == 400 and refused.value.param == param


def test_answer_usage_stop_reasons_and_structured_output() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [{"text": "Hi "}, {"text": "there"}, {"reasoningContent": {}}],
            }
        },
        "stopReason": "max_tokens",
        "usage": {
            "inputTokens": 10,
            "outputTokens": 3,
            "totalTokens": 13,
            "cacheReadInputTokens": 5,
            "cacheWriteInputTokens": 2,
        },
        "metrics": {"latencyMs": 12},
    }
    body, usage = ADAPTER.parse_response(json.dumps(answer).encode(), "model-x")
    completion = json.loads(body)
    assert completion["model"] == "model-x" and completion["id"].startswith("chatcmpl-")
    again = json.loads(ADAPTER.parse_response(json.dumps(answer).encode(), "model-x")[0])
    assert again["id"] != completion["id"]  # Bedrock names no answer: each gets an id of its own
    assert completion["choices"][0]["message"]["content"] == "Hi there"
    assert completion["choices"][0]["finish_reason"] == "length"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        17,
        3,
        20,
    )
    assert completion["usage"]["prompt_tokens_details"] == {"cached_tokens": 5, "cache_write_tokens": 2}
    tool = {"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {"city": "Oslo"}}}
    answer.update(output={"message": {"role": "assistant", "content": [tool]}}, stopReason="tool_use")
    call = json.loads(ADAPTER.parse_response(json.dumps(answer).encode(), "m")[0])["choices"][0]
    assert call["finish_reason"] == "tool_calls"
    assert call["message"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Oslo"}',
    }
    tool["toolUse"]["name"] = "response_format__answer"
    structured = json.loads(ADAPTER.parse_response(json.dumps(answer).encode(), "m")[0])["choices"][0]
    assert structured["finish_reason"] == "stop" and structured["message"]["content"] == '{"city":"Oslo"}'
    answer["stopReason"] = "malformed_tool_use"
    with pytest.raises(EdgeError) as bad:
        ADAPTER.parse_response(json.dumps(answer).encode(), "m")
    assert bad.value.status == 502
    assert bw.map_stop_reason("guardrail_intervened") == "content_filter"
    assert bw.map_stop_reason("some_new_reason") == "stop"


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (400, "invalid_request_error", "validation_error"),
        (404, "invalid_request_error", "model_not_found"),
        (408, "timeout_error", "model_timeout"),
        (429, "rate_limit_error", "throttled"),
        (500, "server_error", "internal_server_error"),
        (503, "server_error", "service_unavailable"),
    ],
)
def test_http_errors_by_status(status: int, kind: str, code: str) -> None:
    detail = ADAPTER.parse_error(status, b'{"message": "nope"}')
    assert (detail.type, detail.code) == (kind, code) and detail.message.endswith("nope")


def test_named_errors_keep_their_status() -> None:
    assert bw.map_error(0, "modelStreamErrorException", b'{"message": "m"}')[0] == 502  # 424 -> 502
    assert bw.map_error(0, "ModelNotReadyException:http://x/", b"{}")[0] == 429
    assert bw.map_error(0, "throttlingException", b"{}")[1].type == "rate_limit_error"
    status, detail = bw.map_error(400, "", b'{"message": "Input is too long for requested model."}')
    assert status == 400 and detail.code == "context_length_exceeded"  # context-window fallbacks apply


def _stream_frames(events: list[tuple[str, dict[str, Any]]]) -> bytes:
    return b"".join(aws.event(name, json.dumps(payload).encode()) for name, payload in events)


TEXT_STREAM = [
    ("messageStart", {"role": "assistant", "p": "abc"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Hello"}, "p": "x"}),
    ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": " world"}}),
    ("contentBlockStop", {"contentBlockIndex": 0}),
    (
        "contentBlockStart",
        {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu1", "name": "get_weather"}}},
    ),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"city":'}}}),
    ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '"Oslo"}'}}}),
    ("contentBlockStop", {"contentBlockIndex": 1}),
    ("messageStop", {"stopReason": "tool_use"}),
    (
        "metadata",
        {"usage": {"inputTokens": 7, "outputTokens": 4, "totalTokens": 11}, "metrics": {"latencyMs": 3}},
    ),
]


def test_fake_frames_parse_with_botocore() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(
        _stream_frames(TEXT_STREAM) + aws.exception("throttlingException", b'{"message": "slow"}')
    )
    messages = list(buffer)
    assert [m.headers[":event-type"] for m in messages[:-1]] == [name for name, _ in TEXT_STREAM]
    assert messages[-1].headers[":message-type"] == "exception"
    assert messages[-1].headers[":exception-type"] == "throttlingException"
    assert json.loads(messages[1].payload)["delta"] == {"text": "Hello"}


def test_event_stream_translation_fed_in_arbitrary_pieces() -> None:
    data = _stream_frames(TEXT_STREAM)
    parser, translator, assembler = (
        EventStreamParser(1 << 20),
        ADAPTER.stream_translator("m"),
        ChunkAssembler(),
    )
    rng = random.Random(7)
    chunks = []
    i = 0
    while i < len(data):  # network reads split anywhere, byte-sized ones included
        size = rng.choice([1, 3, 17, 200])
        for event, payload in parser.feed_bytes(data[i : i + size]):
            chunks.extend(chunk for _, chunk in translator.feed(event, payload))
        i += size
    for chunk in chunks:
        assembler.add(chunk)
    assert translator.finished and assembler.complete
    completion = assembler.completion()
    assert completion.choices[0].message.content == "Hello world"
    assert completion.choices[0].finish_reason == "tool_calls"
    call = completion.choices[0].message.tool_calls[0]
    assert (call.id, call.function.name, call.function.arguments) == ("tu1", "get_weather", '{"city":"Oslo"}')
    assert assembler.usage is not None and assembler.usage.total_tokens == 11


def test_stream_exceptions_and_broken_frames() -> None:
    parser, translator = EventStreamParser(1 << 20), ADAPTER.stream_translator("m")
    frames = _stream_frames(TEXT_STREAM[:2]) + aws.exception(
        "throttlingException", b'{"message": "Too many"}'
    )
    with pytest.raises(StreamError) as throttled:
        for event, payload in parser.feed_bytes(frames):
            translator.feed(event, payload)
    assert throttled.value.status == 429 and "Too many" in throttled.value.detail.message
    corrupt = bytearray(_stream_frames(TEXT_STREAM[:1]))
    corrupt[-1] ^= 0xFF  # the message CRC no longer matches
    with pytest.raises(StreamError) as broken:
        list(EventStreamParser(1 << 20).feed_bytes(bytes(corrupt)))
    assert broken.value.status == 502
    with pytest.raises(EventTooLarge):
        list(EventStreamParser(64).feed_bytes(_stream_frames(TEXT_STREAM[1:2])[:-10]))


def test_requests_are_signed_and_verify() -> None:
    deployment = _deployment()
    request = ADAPTER.build_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, deployment.model, deployment, ""
    )
    assert request.url == "http://127.0.0.1:9/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert request.encoded and request.headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKID")
    now = datetime.datetime.now(datetime.UTC)
    headers = {**request.headers, "host": "127.0.0.1:9"}
    problem = aws.signature_problem("POST", request.url, _Headers(headers), request.body, now)
    assert problem is None
    # botocore is given the host and the body's hash (sent, and signed), so it parses neither
    assert request.headers["Host"] == "127.0.0.1:9"
    assert request.headers["X-Amz-Content-SHA256"] == hashlib.sha256(request.body).hexdigest()
    signed_names = "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date,"
    assert signed_names in request.headers["Authorization"]
    tampered = aws.signature_problem("POST", request.url, _Headers(headers), request.body + b" ", now)
    assert tampered is not None and "x-amz-content-sha256" in tampered
    rehashed = {**headers, "X-Amz-Content-SHA256": hashlib.sha256(request.body + b" ").hexdigest()}
    forged = aws.signature_problem("POST", request.url, _Headers(rehashed), request.body + b" ", now)
    assert forged is not None and "signature we calculated does not match" in forged
    late = aws.signature_problem(
        "POST", request.url, _Headers(headers), request.body, now + datetime.timedelta(hours=1)
    )
    assert late is not None and "expired" in late
    with_token = _deployment(aws=msgspec.structs.replace(SOURCE, session_token="a-token"))
    signed = ADAPTER.build_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "m", with_token, ""
    )
    assert signed.headers["X-Amz-Security-Token"] == "a-token"  # signed too: the fake checks it
    problem = aws.signature_problem(
        "POST", signed.url, _Headers({**signed.headers, "host": "127.0.0.1:9"}), signed.body, now
    )
    assert problem is None
    stream_url = model_url(deployment, "arn:aws:bedrock:us-east-1:1:inference-profile/x", "converse-stream")
    assert stream_url.endswith(
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fx/converse-stream"
    )


def test_awscrt_signs_as_botocore_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CRT's signature is botocore's, byte for byte: over a date change, with and without a
    session token, for a path that is already percent-encoded (Bedrock's model ids: SigV4
    encodes it once more in the canonical request) and one with a query."""
    urls = (
        "http://127.0.0.1:9/model/us.anthropic.claude-3-5-haiku-20241022-v1%3A0/converse",
        "https://bedrock-runtime.eu-west-3.amazonaws.com/model/m/invoke?x=1&a=b%20c",
    )
    for token in (None, "a-session-token"):
        source = AwsCredentials(
            access_key_id="AKIDCRT", secret_access_key="crt-secret", session_token=token or ""
        )
        deployment = _deployment(aws=source)
        for day in ("2026-12-05T23:59:59", "2026-12-06T00:00:01"):
            when = datetime.datetime.fromisoformat(day)
            monkeypatch.setattr(bedrock_auth, "utc_now", lambda when=when: when.replace(tzinfo=datetime.UTC))
            monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda when=when: when)
            for url in urls:
                body = b'{"messages": []}'
                ours = bedrock_auth.sign(deployment, url, body, {"Content-Type": "application/json"})
                theirs = AWSRequest(
                    method="POST",
                    url=url,
                    data=body,
                    headers={
                        "Content-Type": "application/json",
                        "Host": ours["Host"],
                        "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest(),
                    },
                )
                frozen = Credentials("AKIDCRT", "crt-secret", token).get_frozen_credentials()
                SigV4Auth(frozen, "bedrock", bedrock_auth.region_of(deployment)).add_auth(theirs)
                assert ours["Authorization"] == theirs.headers["Authorization"]
                assert ours["X-Amz-Date"] == theirs.headers["X-Amz-Date"] == when.strftime("%Y%m%dT%H%M%SZ")
                assert ours.get("X-Amz-Security-Token") == token


def test_signed_host_is_botocores() -> None:
    assert host_of("https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse") == (
        "bedrock-runtime.us-east-1.amazonaws.com"
    )
    assert host_of("https://h.example:443/model/x") == "h.example"  # the scheme's default port
    assert host_of("http://h.example:8080/model/x") == "h.example:8080"
    assert host_of("http://[::1]:8080/model/x") == "[::1]:8080"


class _Headers(dict[str, str]):
    """Case-insensitive lookups, as aiohttp's request headers."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in values.items()})

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        return super().get(key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and super().__contains__(key.lower())


def test_refreshable_credentials_get_a_new_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    serial = iter(range(100))

    def refresh() -> dict[str, str]:
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)  # always near expiry
        return {
            "access_key": f"AKID{next(serial)}",
            "secret_key": "s",
            "token": "t",
            "expiry_time": expiry.isoformat(),
        }

    source = AwsCredentials(profile="refreshing")
    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    monkeypatch.setitem(bedrock_auth._sources, source, creds)
    first = bedrock_auth.provider(source)
    assert bedrock_auth.provider(source) is not first  # refreshed: signs with the new keys
    fixed = AwsCredentials(profile="fixed")
    monkeypatch.setitem(bedrock_auth._sources, fixed, Credentials("AKIDX", "s"))
    assert bedrock_auth.provider(fixed) is bedrock_auth.provider(fixed)  # cached
    monkeypatch.setitem(bedrock_auth._sources, AwsCredentials(profile="none"), None)
    with pytest.raises(EdgeError):
        bedrock_auth.provider(AwsCredentials(profile="none"))


def test_default_chain_and_explicit_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY_ID", "AKIDVAR")
    monkeypatch.setenv("MY_SECRET", "secret")
    source = AwsCredentials(access_key_id_env="MY_KEY_ID", secret_access_key_env="MY_SECRET")
    monkeypatch.delitem(bedrock_auth._sources, source, raising=False)
    found = bedrock_auth.credentials(source)
    assert found is not None and found.access_key == "AKIDVAR"
    half = AwsCredentials(access_key_id_env="MY_KEY_ID", secret_access_key_env="UNSET_SECRET_VAR")
    monkeypatch.delitem(bedrock_auth._sources, half, raising=False)
    assert bedrock_auth.missing_credentials([_deployment(aws=half, api_key_env="MY_KEY_ID")]) == {"MY_KEY_ID"}
    # Variables named but unset: missing, not quietly the default chain's credentials.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDDEFAULT")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "default-secret")
    monkeypatch.setattr(bedrock_auth, "_sources", {})  # resolved once per process: start afresh
    unset = AwsCredentials(access_key_id_env="UNSET_ID_VAR", secret_access_key_env="UNSET_SECRET_VAR")
    assert bedrock_auth.credentials(unset) is None
    default = bedrock_auth.credentials(None)
    assert default is not None and default.access_key == "AKIDDEFAULT"


async def test_temporary_credentials_are_refreshed_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import asyncio
    import threading

    threads: list[str] = []
    loop, refreshed = asyncio.get_running_loop(), asyncio.Event()

    def refresh() -> dict[str, str]:
        threads.append(threading.current_thread().name)
        loop.call_soon_threadsafe(refreshed.set)
        expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
        return {
            "access_key": f"AKID{len(threads)}",
            "secret_key": "s",
            "token": "t",
            "expiry_time": expiry.isoformat(),
        }

    creds = RefreshableCredentials.create_from_metadata(refresh(), refresh, "test")
    await asyncio.sleep(0)
    threads.clear()
    refreshed.clear()
    monkeypatch.setitem(bedrock_auth._sources, AwsCredentials(profile="temporary"), creds)
    monkeypatch.setattr(bedrock_auth, "REFRESH_EVERY_S", 0.01)
    task = asyncio.create_task(bedrock_auth.keep_fresh())
    await asyncio.wait_for(refreshed.wait(), 10)
    task.cancel()
    assert threading.main_thread().name not in threads  # a worker thread fetched the new keys
