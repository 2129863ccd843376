"""Anthropic Messages API behind the OpenAI chat-completions interface.

The request mapping lives in `anthropic_request`, the stream translation in `anthropic_stream`,
the wire shapes in `anthropic_wire`; this module holds the answer mapping and the adapter.

Mapping decisions, beyond the one-to-one fields:

- system and developer messages, wherever they appear, become the top-level `system` string,
  joined with blank lines: Anthropic has no mid-conversation system turn.
- Anthropic wants alternating user/assistant turns, so consecutive same-role messages merge
  (tool results are user turns, so a run of tool messages becomes one user turn). Inside a
  user turn, tool_result blocks are moved first, as Anthropic requires.
- Blank text parts are dropped and a final assistant prefill loses its trailing whitespace;
  Anthropic rejects both.
- Tool call ids are sanitised to Anthropic's `[a-zA-Z0-9_-]` alphabet, identically on the
  tool_use and the tool_result side, so ids minted by other providers still pair up.
- What Anthropic cannot honour (n > 1, logprobs, penalties, logit_bias, temperature > 1,
  audio and non-PDF file parts, the deprecated function-calling fields) is a 400 naming the
  parameter rather than silently dropped, since the answer would not be what was asked for.
  `seed` is best-effort at OpenAI too and is ignored; so is a tool's `strict` flag
  (Anthropic's strict mode accepts a different schema subset).
- `response_format` json_schema / json_object: there is no portable JSON mode, so the schema
  becomes a tool named `response_format__<schema name>` that the model is forced to call (or,
  when the client also gave tools, forced to call *some* tool). On the way back that tool's
  input becomes the message content as a JSON string, finish_reason "stop". The prefix is
  reserved, because the answer alone must tell which tool call is the structured output.
- `top_k` and `thinking` in the raw body are Anthropic-native and pass through. With
  `thinking.budget_tokens` and no max_tokens, the default grows by the budget (Anthropic
  wants max_tokens > budget). Thinking blocks are not returned: OpenAI has no field for them.

`to_messages_request` and `to_chat_completion` are pure so the stream translator can reuse them,
as are `map_stop_reason`, `map_usage` and `map_error` in `anthropic_wire`.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from edge_workers.providers import anthropic_wire as aw
from edge_workers.providers.anthropic_request import to_messages_request
from edge_workers.providers.anthropic_stream import AnthropicChunkStream
from edge_workers.providers.anthropic_wire import (
    is_response_tool,
    map_error,
    map_stop_reason,
    map_usage,
)
from edge_workers.providers.base import UpstreamRequest, unreadable_error
from shared.anthropic_api import ANTHROPIC_VERSION
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import (
    ChatCompletion,
    Choice,
    ErrorDetail,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)

__all__ = ["AnthropicAdapter", "is_response_tool", "to_chat_completion", "to_messages_request"]

_encode = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode
_decode_message = msgspec.json.Decoder(aw.AnthropicMessage).decode
_decode_error = msgspec.json.Decoder(aw.ErrorResponse).decode


def to_chat_completion(msg: aw.AnthropicMessage, created: int) -> ChatCompletion:
    """An Anthropic message -> an OpenAI chat.completion with one choice."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    structured: str | None = None
    for block in msg.content:
        if block.type == "text" and block.text is not None:
            texts.append(block.text)
        elif block.type == "tool_use" and block.name:
            arguments = _encode(block.input if block.input is not None else {}).decode()
            if is_response_tool(block.name):
                structured = arguments
            else:
                call = FunctionCall(name=block.name, arguments=arguments)
                calls.append(ToolCall(id=block.id or "", function=call))
        # thinking, redacted_thinking, server tool blocks...: OpenAI's message cannot carry them.
    finish = map_stop_reason(msg.stop_reason) or "stop"
    content = "".join(texts) if texts else None
    if structured is not None:
        # Prose next to the structured answer is dropped: clients json-decode the content.
        content = structured
        if msg.stop_reason == "tool_use" and not calls:
            finish = "stop"
    return ChatCompletion(
        id=f"chatcmpl-{msg.id}",
        created=created,
        model=msg.model,
        choices=[
            Choice(
                index=0,
                message=ResponseMessage(content=content, tool_calls=calls or None),
                finish_reason=finish,
            )
        ],
        usage=map_usage(msg.usage),
    )


class AnthropicAdapter:
    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        request = to_messages_request(body, upstream_model)
        if stream:
            request.stream = True
        payload = _encode(request)
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        return UpstreamRequest(url=f"{deployment.base_url}/v1/messages", headers=headers, body=payload)

    def parse_response(self, body: bytes) -> tuple[bytes, Usage | None]:
        try:
            msg = _decode_message(body)
        except msgspec.DecodeError:
            raise EdgeError(
                502, "upstream answered 2xx with a body that is not an Anthropic message"
            ) from None
        completion = to_chat_completion(msg, int(time.time()))
        return _encode(completion), completion.usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        try:
            error = _decode_error(body).error
        except msgspec.DecodeError:
            return unreadable_error(status, body)
        return map_error(status, error.type, error.message)

    def stream_translator(self) -> AnthropicChunkStream:
        return AnthropicChunkStream(int(time.time()))
