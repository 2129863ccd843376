"""Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`) behind the OpenAI
chat-completions interface.

The request mapping lives in `gemini_request`, the stream translation in `gemini_stream`, the
wire shapes in `gemini_wire`; this module holds the answer and error mapping and the adapter.

Mapping decisions, beyond the one-to-one fields:

- The key goes in the `x-goog-api-key` header, never in the URL (URLs end up in logs).
- system and developer messages become `systemInstruction`; user/assistant turns become
  `user`/`model` contents, consecutive same-role turns merged (tool results are user turns).
- Images: base64 `data:` URLs go inline (`inlineData`); `gs://` and Gemini Files API URIs go
  by reference (`fileData`, media type from the extension). Other http(s) image URLs are a 400:
  the worker would have to fetch them, and a client must not make the gateway fetch a URL.
- Tool results are paired with their call by function name (Gemini's rule): the name is looked
  up from the assistant message that made the call, so a tool message answering no known call
  is a 400. A result that is a JSON object is sent as it is, anything else as `{"result": ...}`.
  Gemini gives calls no ids (or ids the gateway does not rely on): answers get `call_<random>`.
- `response_format` json_schema -> `responseMimeType: application/json` + `responseSchema`
  (the JSON Schema rewritten into Gemini's OpenAPI subset: `$ref`s inlined, nullable, upper-case
  types, unknown keywords dropped); json_object -> the MIME type alone. Tool parameter schemas
  are rewritten the same way.
- `n` -> `candidateCount`, `max_tokens`/`max_completion_tokens` -> `maxOutputTokens`,
  `stop` -> `stopSequences`, penalties and `seed` as they are, raw `top_k` -> `topK`.
  logprobs and logit_bias are a 400. `reasoning_effort`, `user` and `metadata` are ignored.
- Usage: `promptTokenCount` (+ tool-use prompt tokens) -> prompt_tokens, cached content ->
  `prompt_tokens_details.cached_tokens`, `candidatesTokenCount` + `thoughtsTokenCount` ->
  completion_tokens (thinking is billed as output). Thought parts are not returned.
- Finish reasons: STOP -> stop (tool_calls when the answer calls functions), MAX_TOKENS ->
  length, SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY, LANGUAGE ->
  content_filter (the answer so far is returned, as Azure OpenAI does). A prompt blocked before
  any answer (`promptFeedback.blockReason`) is a 400 with code `content_filter`.
- Errors: google.rpc status -> OpenAI's types (RESOURCE_EXHAUSTED -> 429 rate_limit_error, its
  `RetryInfo.retryDelay` as the Retry-After; INVALID_ARGUMENT about the input token count ->
  `context_length_exceeded`); a 400 refusing the API key counts as refused credentials (401).
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from edge_workers.providers import gemini_wire as gw
from edge_workers.providers.base import UpstreamRequest, completion_id, unreadable_error
from edge_workers.providers.gemini_request import to_gemini_request
from edge_workers.providers.gemini_stream import GeminiChunkStream
from edge_workers.providers.gemini_wire import (
    blocked_prompt,
    map_error,
    map_finish_reason,
    map_usage,
    tool_call_of,
)
from shared.config import Deployment
from shared.errors import EdgeError
from shared.sse import SSEParser
from shared.wire import ChatCompletion, Choice, ErrorDetail, ResponseMessage, ToolCall, Usage

__all__ = ["GeminiAdapter", "map_finish_reason", "map_usage", "to_chat_completion"]

_encode = msgspec.json.Encoder().encode


def to_chat_completion(answer: gw.GenerateContentResponse, model: str, created: int) -> ChatCompletion:
    blocked = blocked_prompt(answer.prompt_feedback)
    if blocked is not None:
        raise blocked
    if not answer.candidates:
        raise EdgeError(502, "upstream gemini answered 2xx without a candidate")
    choices = []
    for candidate in sorted(answer.candidates, key=lambda c: c.index):
        texts: list[str] = []
        calls: list[ToolCall] = []
        for part in candidate.content.parts if candidate.content else ():
            if part.thought:
                continue  # thinking: OpenAI's message has no field for it
            if part.text is not None:
                texts.append(part.text)
            elif part.function_call is not None:
                calls.append(tool_call_of(part))
        finish = map_finish_reason(candidate.finish_reason, bool(calls)) or "stop"
        message = ResponseMessage(
            content="".join(texts) if texts or not calls else None, tool_calls=calls or None
        )
        choices.append(Choice(index=candidate.index, message=message, finish_reason=finish))
    return ChatCompletion(
        id="chatcmpl-" + answer.response_id if answer.response_id else completion_id(),
        created=created,
        model=answer.model_version or model,
        choices=choices,
        usage=map_usage(answer.usage_metadata) if answer.usage_metadata else None,
    )


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _retry_delay(error: gw.Status) -> float | None:
    for detail in error.details:
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            match = _DURATION.match(str(detail.get("retryDelay", "")))
            if match:
                return float(match.group(1))
    return None


def _key_refused(error: gw.Status) -> bool:
    return (
        any(d.get("reason") == "API_KEY_INVALID" for d in error.details)
        or "API key not valid" in error.message
    )


class GeminiAdapter:
    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        payload = _encode(to_gemini_request(body))
        model = upstream_model.removeprefix("models/")
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key
        return UpstreamRequest(
            url=f"{deployment.base_url}/models/{model}:{action}", headers=headers, body=payload
        )

    def parse_response(self, body: bytes, model: str = "") -> tuple[bytes, Usage | None]:
        try:
            answer = gw.decode_response(body)
        except msgspec.DecodeError:
            raise EdgeError(502, "upstream answered 2xx with a body that is not a Gemini answer") from None
        completion = to_chat_completion(answer, model, int(time.time()))
        return _encode(completion), completion.usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        try:
            error = gw.decode_error(body).error
        except msgspec.DecodeError:
            return unreadable_error(status, body)
        return map_error(status, error)

    def upstream_status(
        self, status: int, body: bytes, retry_after: float | None
    ) -> tuple[int, float | None]:
        """What Gemini meant: a 400 refusing the API key is a refused credential (401), and a
        429's wait is in the body's RetryInfo, not in a Retry-After header."""
        try:
            error = gw.decode_error(body).error
        except msgspec.DecodeError:
            return status, retry_after
        if status == 400 and _key_refused(error):
            status = 401
        return status, retry_after if retry_after is not None else _retry_delay(error)

    def stream_translator(self, model: str = "") -> GeminiChunkStream:
        return GeminiChunkStream(int(time.time()))

    def stream_parser(self, max_event_bytes: int) -> SSEParser:
        return SSEParser(max_event_bytes)
