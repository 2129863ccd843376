"""The fake Bedrock runtime speaks what the real one does: boto3's own bedrock-runtime client,
pointed at it with `endpoint_url`, signs, sends, parses answers, event streams and errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from edge_agent.fake_upstream import BackgroundServer
from edge_agent.fake_upstream.aws import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY

MODEL = "us.anthropic.claude-3-5-haiku-20241022-v1:0"
WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "inputSchema": {
            "json": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        },
    }
}


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer() as srv:
        yield srv


def _client(server: BackgroundServer, secret: str = FAKE_SECRET_ACCESS_KEY, **config: Any) -> Any:
    return boto3.client(
        "bedrock-runtime",
        region_name="us-west-2",
        endpoint_url=server.url,
        aws_access_key_id=FAKE_ACCESS_KEY_ID,
        aws_secret_access_key=secret,
        aws_session_token="a-session-token",  # signed as X-Amz-Security-Token
        config=Config(retries={"max_attempts": 1}, **config),
    )


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"text": text}]}]


def test_converse(server: BackgroundServer) -> None:
    answer = _client(server).converse(
        modelId=MODEL, messages=_user("hello"), system=[{"text": "brief"}], inferenceConfig={"maxTokens": 5}
    )
    assert answer["output"]["message"]["content"][0]["text"].startswith("Re: hello")
    assert answer["stopReason"] == "max_tokens"
    assert answer["usage"]["outputTokens"] == 5
    assert server.stats.by_model[MODEL] >= 1


def test_converse_stream_and_tools(server: BackgroundServer) -> None:
    events = list(_client(server).converse_stream(modelId=MODEL, messages=_user("hi there"))["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text.startswith("Re: hi there")
    tools = _client(server).converse(modelId=MODEL, messages=_user("Paris"), toolConfig={"tools": [WEATHER]})
    use = tools["output"]["message"]["content"][0]["toolUse"]
    assert tools["stopReason"] == "tool_use" and use["name"] == "get_weather" and "city" in use["input"]
    image = {"image": {"format": "png", "source": {"bytes": b"\x89PNG...."}}}
    with_image = [{"role": "user", "content": [{"text": "see"}, image]}]
    assert _client(server).converse(modelId=MODEL, messages=with_image)["stopReason"] == "end_turn"


@pytest.mark.parametrize(
    ("marker", "name", "status"),
    [
        ("[[fake:status=429]]", "ThrottlingException", 429),
        ("[[fake:status=400]]", "ValidationException", 400),
        ("[[fake:status=503]]", "ServiceUnavailableException", 503),
        ("[[fake:status=429]][[fake:error_code=ModelNotReadyException]]", "ModelNotReadyException", 429),
    ],
)
def test_errors_are_bedrock_exceptions(server: BackgroundServer, marker: str, name: str, status: int) -> None:
    with pytest.raises(ClientError) as failed:
        _client(server).converse(modelId=MODEL, messages=_user(f"x {marker}"))
    assert failed.value.response["Error"]["Code"] == name
    assert failed.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_exception_inside_the_stream(server: BackgroundServer) -> None:
    stream = _client(server).converse_stream(modelId=MODEL, messages=_user("x [[fake:stream_error_after=2]]"))
    with pytest.raises(ClientError) as failed:
        list(stream["stream"])
    assert failed.value.response["Error"]["Code"] == "modelStreamErrorException"


def test_signature_and_body_are_checked(server: BackgroundServer) -> None:
    with pytest.raises(ClientError) as forged:
        _client(server, secret="not-the-secret").converse(modelId=MODEL, messages=_user("x"))
    assert forged.value.response["Error"]["Code"] == "InvalidSignatureException"
    # What boto3 would refuse before sending, the fake refuses as Bedrock does.
    unchecked = _client(server, parameter_validation=False)
    with pytest.raises(ClientError) as invalid:
        unchecked.converse(modelId=MODEL, messages=_user("x"), inferenceConfig={"maxTokens": 0})
    assert invalid.value.response["Error"]["Code"] == "ValidationException"
    assert "maxTokens" in invalid.value.response["Error"]["Message"]
