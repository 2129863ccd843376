import msgspec
import pytest

from edge_front.chat import parse_chat_request
from shared.errors import EdgeError


def body(**fields):
    return msgspec.json.encode({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], **fields})


def test_accepts_every_role_and_content_shape():
    _, chat = parse_chat_request(
        body(
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "developer", "content": [{"type": "text", "text": "really"}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/a.png", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "42"},
            ],
            tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            tool_choice={"type": "function", "function": {"name": "f"}},
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            temperature=0.2,
            top_p=0.9,
            max_tokens=10,
            max_completion_tokens=10,
            stop=["\n"],
            n=1,
            seed=7,
            user="u",
            logprobs=False,
        )
    )
    assert chat.model == "gpt-4o" and len(chat.messages) == 5


def test_unknown_fields_are_kept_for_passthrough():
    raw, _ = parse_chat_request(body(reasoning_effort="low", prediction={"type": "content", "content": "x"}))
    assert raw["reasoning_effort"] == "low" and raw["prediction"]["content"] == "x"


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (msgspec.json.encode({"messages": [{"role": "user", "content": "x"}]}), "model"),
        (body(messages=[]), "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (body(temperature=3), "temperature"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id"),
        (body(n=0), "n"),
        (body(tool_choice="sometimes"), "tool_choice"),
    ],
)
def test_bad_requests_are_400_with_param(payload, param):
    with pytest.raises(EdgeError) as caught:
        parse_chat_request(payload)
    assert caught.value.status == 400
    assert caught.value.param == param
    envelope = msgspec.json.decode(caught.value.body())
    assert envelope["error"]["type"] == "invalid_request_error"
    assert envelope["error"]["param"] == param
