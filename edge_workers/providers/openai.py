"""OpenAI and any OpenAI-compatible upstream: the request and answer pass through unchanged,
except for the upstream model name."""

from __future__ import annotations

from typing import Any

import msgspec

from edge_workers.providers.base import StreamError, UpstreamRequest
from shared.config import Deployment
from shared.errors import EdgeError
from shared.sse import SSEParser
from shared.wire import ChatCompletion, ChatCompletionChunk, ErrorDetail, ErrorEnvelope, Usage

_encode = msgspec.json.Encoder().encode
_decode_completion = msgspec.json.Decoder(ChatCompletion).decode
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode
_decode_chunk = msgspec.json.Decoder(ChatCompletionChunk).decode


class OpenAIStreamTranslator:
    """OpenAI's chunks are already the wire format: forwarded byte for byte, parsed only to be
    assembled for the cache."""

    def __init__(self) -> None:
        self.finished = False

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, ChatCompletionChunk]]:
        if data == b"[DONE]":
            self.finished = True
            return []
        try:
            return [(data, _decode_chunk(data))]
        except msgspec.ValidationError:
            pass  # not a chunk: most likely an error event
        except msgspec.DecodeError:
            raise StreamError(
                ErrorDetail("upstream sent a malformed stream event", "upstream_error"), 502
            ) from None
        try:
            detail = _decode_error(data).error
        except msgspec.DecodeError:
            detail = ErrorDetail("upstream sent an unexpected stream event", "upstream_error")
        raise StreamError(detail, 502)


def _not_a_completion(body: bytes, error: msgspec.DecodeError) -> str:
    try:  # some servers report failures as 200 with an error object
        detail = _decode_error(body).error
    except msgspec.DecodeError:
        return f"upstream answered 2xx with a body that is not a chat completion ({error})"
    return f"upstream answered 2xx with an error: {detail.message}"


class OpenAIAdapter:
    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        # Every field passes through, including ones this gateway does not model yet.
        out = dict(body)
        out["model"] = upstream_model
        if stream:
            # Always ask for usage: the gateway counts tokens and caches the whole answer; the
            # front drops the usage chunk for clients that did not ask for it.
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return UpstreamRequest(
            url=f"{deployment.base_url}/chat/completions", headers=headers, body=_encode(out)
        )

    def parse_response(self, body: bytes, model: str = "") -> tuple[bytes, Usage | None]:
        """The body passes through as it came, but only once it is known to be a whole chat
        completion: anything else would be returned as a success and cached."""
        try:
            completion = _decode_completion(body)
        except msgspec.DecodeError as e:
            raise EdgeError(502, _not_a_completion(body, e)) from None
        if not completion.choices or any(c.finish_reason is None for c in completion.choices):
            raise EdgeError(
                502, "upstream answered 2xx with an incomplete chat completion (no finish_reason)"
            )
        return body, completion.usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        try:
            return _decode_error(body).error
        except msgspec.DecodeError:
            text = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
            return ErrorDetail(message=f"upstream answered {status}: {text}", type="upstream_error")

    def stream_translator(self, model: str = "") -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator()

    def stream_parser(self, max_event_bytes: int) -> SSEParser:
        return SSEParser(max_event_bytes)
