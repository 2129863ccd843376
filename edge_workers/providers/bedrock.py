"""AWS Bedrock behind the OpenAI chat-completions interface, through the Converse and
ConverseStream APIs (one request shape for every Bedrock model).

The request mapping lives in `bedrock_request`, the stream in `bedrock_stream`, the wire shapes
and error mapping in `bedrock_wire`, the SigV4 signature in `bedrock_auth`. Decisions, beyond
the one-to-one fields (most shared with the Anthropic adapter, whose helpers are reused):

- system and developer messages become Converse's `system` blocks; consecutive same-role turns
  merge (tool results are user turns); a final assistant prefill loses its trailing whitespace.
- Images must be base64 data: URLs (png, jpeg, gif, webp): they are decoded, checked and sent
  as Converse image bytes. Links are a 400: neither Bedrock nor the gateway fetches them.
- What Converse cannot honour (n > 1, logprobs, penalties, logit_bias, audio and file parts,
  the deprecated function-calling fields) is a 400 naming the parameter. `top_k` goes as an
  additional model field; `seed` and `user` are ignored.
- `response_format` becomes a forced `response_format__<name>` tool whose input is returned as
  the message content, as for Anthropic.
- Usage: Bedrock's inputTokens leave out prompt-cache reads and writes; prompt_tokens adds them
  back and keeps them in prompt_tokens_details. Stop reasons map to OpenAI's finish reasons
  (`malformed_model_output` / `malformed_tool_use` are a 502, never cached).
- Errors: an HTTP error's status tells the exception (each has its own but 429, where
  ThrottlingException and ModelNotReadyException share it: both retryable); exceptions inside
  a stream carry their name. 403 (AccessDenied, a bad signature) is the gateway's credentials
  refused (502, the deployment's failure); 424 (the model failed) is a 502.
"""

from __future__ import annotations

import functools
import time
from typing import Any
from urllib.parse import quote

import msgspec

from edge_workers.providers import bedrock_wire as bw
from edge_workers.providers.anthropic_wire import is_response_tool
from edge_workers.providers.base import UpstreamRequest, completion_id
from edge_workers.providers.bedrock_auth import sign
from edge_workers.providers.bedrock_request import to_converse_request
from edge_workers.providers.bedrock_stream import BedrockChunkStream, EventStreamParser
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import ChatCompletion, Choice, ErrorDetail, FunctionCall, ResponseMessage, ToolCall, Usage

_encode = msgspec.json.Encoder().encode
_decode_response = msgspec.json.Decoder(bw.ConverseResponse).decode
_JSON = {"Content-Type": "application/json"}


@functools.lru_cache(maxsize=1024)
def _model_path(model: str) -> str:
    return quote(model, safe="")


def model_url(deployment: Deployment, model: str, action: str) -> str:
    """`<endpoint>/model/<model id>/<action>`, the id percent-encoded as the AWS SDKs do (ids
    hold `:`, inference-profile ARNs `/`)."""
    return f"{deployment.base_url}/model/{_model_path(model)}/{action}"


def to_chat_completion(response: bw.ConverseResponse, model: str, created: int) -> ChatCompletion:
    texts: list[str] = []
    calls: list[ToolCall] = []
    structured: str | None = None
    message = response.output.message
    for block in message.content if message is not None else []:
        if block.text is not None:
            texts.append(block.text)
        elif block.tool_use is not None:
            use = block.tool_use
            arguments = _encode(use.input if use.input is not None else {}).decode()
            if is_response_tool(use.name):
                structured = arguments
            else:
                calls.append(ToolCall(id=use.tool_use_id, function=FunctionCall(use.name, arguments)))
        # reasoning, citations...: OpenAI's message has no field for them.
    finish = bw.map_stop_reason(response.stop_reason)
    content = "".join(texts) if texts else None
    if structured is not None:
        content = structured  # prose next to the structured answer is dropped, as for Anthropic
        if response.stop_reason == "tool_use" and not calls:
            finish = "stop"
    message_out = ResponseMessage(content=content, tool_calls=calls or None)
    usage = bw.map_usage(response.usage) if response.usage is not None else None
    return ChatCompletion(completion_id(), created, model, [Choice(0, message_out, finish)], usage)


class BedrockAdapter:
    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        payload = _encode(to_converse_request(body))
        url = model_url(deployment, upstream_model, "converse-stream" if stream else "converse")
        return UpstreamRequest(url, sign(deployment, url, payload, dict(_JSON)), payload, encoded=True)

    def parse_response(self, body: bytes, model: str = "") -> tuple[bytes, Usage | None]:
        try:
            response = _decode_response(body)
        except msgspec.DecodeError:
            raise EdgeError(
                502, "upstream bedrock answered 2xx with a body that is not a Converse answer"
            ) from None
        completion = to_chat_completion(response, model, int(time.time()))
        return _encode(completion), completion.usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        return bw.map_error(status, "", body)[1]

    def stream_translator(self, model: str = "") -> BedrockChunkStream:
        return BedrockChunkStream(int(time.time()), model)

    def stream_parser(self, max_event_bytes: int) -> EventStreamParser:
        return EventStreamParser(max_event_bytes)
