"""Jobs of an Anthropic Messages client (`Job.api`): which adapter and stream serve them.

- To an Anthropic upstream the request goes as the client sent it (`MessagesPassthrough`): the
  body with only `model` set to the deployment's, the allow-listed anthropic-version and
  anthropic-beta headers the client sent (shared/anthropic_api.FORWARDED_HEADERS), and the
  worker's own key. So Anthropic features the gateway has never heard of work on day one.
  The answer comes back as it is, checked to be a message.
- To any other provider (`MessagesViaChat`) it is translated to an OpenAI chat request
  (shared/anthropic_to_chat.py), sent through that provider's own adapter, and its answer
  (or stream) translated back (edge_workers/messages_stream.py).
- `count_tokens` goes to an Anthropic upstream's `/v1/messages/count_tokens`, passed through
  likewise; the front answers it itself for other providers (edge_front/messages.py).
"""

from __future__ import annotations

from typing import Any

import msgspec

from edge_workers.messages_stream import AnthropicEvents, ChatToEvents, to_anthropic_message
from edge_workers.providers import ADAPTERS, Adapter, UpstreamRequest
from edge_workers.providers.anthropic_wire import AnthropicMessage, map_usage
from edge_workers.providers.base import StreamTranslator
from edge_workers.streaming import AnswerStream, ChatAnswerStream
from shared.anthropic_api import ANTHROPIC_VERSION, FORWARDED_HEADERS
from shared.anthropic_to_chat import to_chat_request
from shared.config import Deployment
from shared.errors import EdgeError
from shared.queue import Job
from shared.wire import ChatCompletion, ErrorDetail, Usage

CHAT, MESSAGES, COUNT_TOKENS = "chat", "messages", "count_tokens"

_encode = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(AnthropicMessage).decode
_decode_completion = msgspec.json.Decoder(ChatCompletion).decode


class _InputTokens(msgspec.Struct):
    input_tokens: int


_decode_count = msgspec.json.Decoder(_InputTokens).decode


class MessagesPassthrough:
    """An Anthropic Messages (or count_tokens) request to an Anthropic upstream, as sent."""

    def __init__(self, headers: dict[str, str] | None, path: str = "/v1/messages") -> None:
        # Filtered again here: the job came through Redis, and only these may reach the upstream.
        self.headers = {k: v for k, v in (headers or {}).items() if k in FORWARDED_HEADERS}
        self.path = path

    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        out = {**body, "model": upstream_model}
        if self.path == "/v1/messages":
            out["stream"] = stream
        headers = {"anthropic-version": ANTHROPIC_VERSION, **self.headers, "content-type": "application/json"}
        if api_key:
            headers["x-api-key"] = api_key
        return UpstreamRequest(url=f"{deployment.base_url}{self.path}", headers=headers, body=_encode(out))

    def parse_response(self, body: bytes) -> tuple[bytes, Usage | None]:
        if self.path != "/v1/messages":
            try:
                _decode_count(body)
            except msgspec.DecodeError:
                raise EdgeError(502, "upstream answered 2xx with a body that is not a token count") from None
            return body, None
        try:
            message = _decode_message(body)
        except msgspec.DecodeError:
            raise EdgeError(
                502, "upstream answered 2xx with a body that is not an Anthropic message"
            ) from None
        if message.stop_reason is None:
            raise EdgeError(502, "upstream answered 2xx with an incomplete message (no stop_reason)")
        return body, map_usage(message.usage)

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        return ADAPTERS["anthropic"].parse_error(status, body)

    def stream_translator(self) -> StreamTranslator:
        raise NotImplementedError("a passthrough stream is an AnthropicEvents answer stream")


class MessagesViaChat:
    """An Anthropic Messages request to an OpenAI-shaped provider adapter, translated both ways."""

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner

    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        return self.inner.build_request(to_chat_request(body), upstream_model, deployment, api_key, stream)

    def parse_response(self, body: bytes) -> tuple[bytes, Usage | None]:
        completion, usage = self.inner.parse_response(body)
        return _encode(to_anthropic_message(_decode_completion(completion))), usage

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        return self.inner.parse_error(status, body)

    def stream_translator(self) -> StreamTranslator:
        return self.inner.stream_translator()


def shape_of(job: Job, deployment: Deployment) -> tuple[Adapter, AnswerStream | None]:
    """The adapter for `job`'s upstream call, and for a streamed job the stream that turns the
    upstream's events into what its client reads."""
    provider = ADAPTERS[deployment.provider]
    if job.api == MESSAGES:
        if deployment.provider == "anthropic":
            return MessagesPassthrough(job.upstream_headers), AnthropicEvents() if job.stream else None
        via = MessagesViaChat(provider)
        return via, ChatToEvents(via.stream_translator()) if job.stream else None
    if job.api == COUNT_TOKENS:
        if deployment.provider != "anthropic":  # the front counts these itself
            raise EdgeError(400, f"{deployment.provider} has no token counting endpoint")
        return MessagesPassthrough(job.upstream_headers, "/v1/messages/count_tokens"), None
    return provider, ChatAnswerStream(provider.stream_translator()) if job.stream else None
