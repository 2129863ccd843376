"""What a provider adapter does: translate an OpenAI chat request to the provider's HTTP request,
and the provider's answer back to an OpenAI chat.completion (or to an OpenAI error)."""

from __future__ import annotations

import functools
import itertools
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec
from yarl import URL

from shared.config import Deployment
from shared.wire import ChatCompletionChunk, ErrorDetail, Usage

# Completion ids: a random prefix per process, then a count. Unique without a random draw per
# answer (os.urandom is a syscall: ~9 µs inside a busy worker, for an id nobody needs secret).
_ID_PREFIX = "chatcmpl-" + secrets.token_hex(8)
_id_count = itertools.count(1)


def completion_id() -> str:
    """An OpenAI-looking completion id for a provider whose answer names none (Bedrock, and
    Gemini without a response id)."""
    return f"{_ID_PREFIX}{next(_id_count):08x}"


class StreamError(Exception):
    """The upstream reported an error inside a stream that had already started."""

    def __init__(self, detail: ErrorDetail, status: int) -> None:
        super().__init__(detail.message)
        self.detail = detail
        self.status = status


class StreamParser(Protocol):
    """Splits a streamed body into (event name, payload) pairs as its bytes arrive."""

    def feed_bytes(self, data: bytes) -> Iterable[tuple[str, bytes]]: ...

    def flush(self) -> Iterable[tuple[str, bytes]]: ...


class StreamTranslator(Protocol):
    def feed(self, event: str, data: bytes) -> list[tuple[bytes, ChatCompletionChunk]]:
        """One upstream SSE event -> the OpenAI chunks it makes, each as (JSON to forward, parsed).
        Raises StreamError for an error event."""
        ...

    @property
    def finished(self) -> bool:
        """The upstream said the stream is complete ([DONE], message_stop)."""
        ...


def unreadable_error(status: int, body: bytes) -> ErrorDetail:
    """An error body in no shape the provider documents (a proxy's HTML page, plain text)."""
    text = body[:200].decode("utf-8", "replace").strip() or f"HTTP {status}"
    return ErrorDetail(message=f"upstream answered {status}: {text}", type="upstream_error")


class UpstreamRequest(msgspec.Struct):
    url: str
    headers: dict[str, str]
    body: bytes
    # The URL is already percent-encoded and must go out byte for byte (a signed path: aiohttp
    # would otherwise turn Bedrock's `%3A` back into `:`, and the signature would not match).
    encoded: bool = False

    @property
    def target(self) -> str | URL:
        return _encoded_url(self.url) if self.encoded else self.url


@functools.lru_cache(maxsize=1024)
def _encoded_url(url: str) -> URL:
    """A percent-encoded URL as yarl keeps it, parsed once per URL (yarl's URLs are immutable)."""
    return URL(url, encoded=True)


class ErrorReader(Protocol):
    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        """A non-2xx upstream body -> the error in OpenAI's terms (message, type, code, param)."""
        ...


class Adapter(Protocol):
    def build_request(
        self,
        body: dict[str, Any],
        upstream_model: str,
        deployment: Deployment,
        api_key: str,
        stream: bool = False,
    ) -> UpstreamRequest:
        """The HTTP request for the upstream. Raises `EdgeError(400, ...)` for a request this
        provider cannot honour. `body` is the client's decoded JSON (already validated)."""
        ...

    def parse_response(self, body: bytes, model: str = "") -> tuple[bytes, Usage | None]:
        """A 2xx upstream body -> (OpenAI chat.completion JSON, usage). `model`: the upstream
        model asked for, for providers whose answers do not name it."""
        ...

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        """A non-2xx upstream body -> the error in OpenAI's terms (message, type, code, param)."""
        ...

    def stream_translator(self, model: str = "") -> StreamTranslator:
        """A fresh translator for one streamed answer."""
        ...

    def stream_parser(self, max_event_bytes: int) -> StreamParser:
        """A fresh parser of the provider's stream framing (SSE for most)."""
        ...


def upstream_status(
    adapter: Adapter, status: int, body: bytes, retry_after: float | None
) -> tuple[int, float | None]:
    """The status and Retry-After an error answer means. An adapter may define
    `upstream_status(status, body, retry_after)` for a provider that says them in its body
    (Gemini: a refused API key is a 400, a 429's wait is in the body's RetryInfo)."""
    hook = getattr(adapter, "upstream_status", None)
    return hook(status, body, retry_after) if hook is not None else (status, retry_after)
