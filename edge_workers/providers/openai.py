"""OpenAI and any OpenAI-compatible upstream: the request and answer pass through unchanged,
except for the upstream model name."""

from __future__ import annotations

from typing import Any

import msgspec

from edge_workers.providers.base import UpstreamRequest
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import ErrorDetail, ErrorEnvelope, Usage, UsageOnly

_encode = msgspec.json.Encoder().encode
_decode_usage = msgspec.json.Decoder(UsageOnly).decode
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


class OpenAIAdapter:
    def build_request(
        self, body: dict[str, Any], upstream_model: str, deployment: Deployment, api_key: str
    ) -> UpstreamRequest:
        # Every field passes through, including ones this gateway does not model yet.
        out = dict(body)
        out["model"] = upstream_model
        out.pop("stream", None)
        out.pop("stream_options", None)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return UpstreamRequest(
            url=f"{deployment.base_url}/chat/completions", headers=headers, body=_encode(out)
        )

    def parse_response(self, body: bytes) -> tuple[bytes, Usage | None]:
        try:
            usage = _decode_usage(body).usage
        except msgspec.DecodeError:
            raise EdgeError(502, "upstream answered 2xx with a body that is not a chat completion") from None
        return body, usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        try:
            return _decode_error(body).error
        except msgspec.DecodeError:
            text = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
            return ErrorDetail(message=f"upstream answered {status}: {text}", type="upstream_error")
