"""OpenAI and any OpenAI-compatible upstream: the request and answer pass through unchanged,
except for the upstream model name."""

from __future__ import annotations

from typing import Any

import msgspec

from edge_workers.providers.base import StreamError, UpstreamRequest, unreadable_error
from shared.config import Deployment
from shared.errors import EdgeError
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
            if self.skipped(data):
                return []
            # not a chunk: most likely an error event
        except msgspec.DecodeError:
            raise StreamError(
                ErrorDetail("upstream sent a malformed stream event", "upstream_error"), 502
            ) from None
        try:
            detail = _decode_error(data).error
        except msgspec.DecodeError:
            detail = ErrorDetail("upstream sent an unexpected stream event", "upstream_error")
        raise StreamError(detail, 502)

    def skipped(self, data: bytes) -> bool:
        """An event that is no chunk and no error, which a provider's translator may skip."""
        return False


class _LooseError(msgspec.Struct):
    """An error as OpenAI-compatible servers really send it: Azure leaves out `type` and sends
    its code as a status string ("429"); vLLM sends an int code; some put it all at the top."""

    message: str = ""
    type: str | None = None
    param: str | None = None
    code: str | int | None = None


class _LooseEnvelope(msgspec.Struct):
    error: _LooseError | str | None = None
    message: str = ""


_decode_loose = msgspec.json.Decoder(_LooseEnvelope).decode


def lenient_error(status: int, body: bytes) -> ErrorDetail:
    """A non-2xx body from an OpenAI-compatible server -> OpenAI's error terms."""
    default_type = ""  # error_body fills in the status's usual type
    try:
        envelope = _decode_loose(body)
    except msgspec.DecodeError:
        envelope = None
    error = envelope.error if envelope is not None else None
    if isinstance(error, str) or (error is None and envelope is not None and envelope.message):
        message = error if isinstance(error, str) else envelope.message if envelope else ""
        return ErrorDetail(message=message, type=default_type)
    if error is None or not error.message:
        return unreadable_error(status, body)
    code = error.code if isinstance(error.code, str) and not error.code.isdigit() else None
    return ErrorDetail(message=error.message, type=error.type or default_type, param=error.param, code=code)


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
        out.pop("stream_options", None)
        if stream:
            out["stream"] = True
            if deployment.stream_options:
                # Always ask for usage: the gateway counts tokens and caches the whole answer;
                # the front drops the usage chunk for clients that did not ask for it. Servers
                # that refuse the field (deployment switch) may send no usage: it is estimated.
                out["stream_options"] = {"include_usage": True}
        else:
            out.pop("stream", None)
        field = deployment.max_tokens_field
        if field is not None:  # the server reads the answer limit under one name only
            other = "max_tokens" if field == "max_completion_tokens" else "max_completion_tokens"
            if other in out:
                limit = out.pop(other)
                out.setdefault(field, limit)
        return UpstreamRequest(
            url=self.url(deployment, upstream_model),
            headers=self.headers(deployment, api_key),
            body=_encode(out),
        )

    def url(self, deployment: Deployment, upstream_model: str) -> str:
        return f"{deployment.base_url}/chat/completions"

    def headers(self, deployment: Deployment, api_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def parse_response(self, body: bytes) -> tuple[bytes, Usage | None]:
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
        return lenient_error(status, body)

    def stream_translator(self) -> OpenAIStreamTranslator:
        return OpenAIStreamTranslator()
