"""What differs between the client APIs the front serves through one request path (chat.py):
how a body is read, how a cached answer streams, the error envelope and the stream framing.
Caching, routing, admission, the queue, retries and metrics are the same for all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from edge_front.reservation import TokenEstimator, completion_tokens
from edge_front.state import FrontState
from edge_front.streams import Framing
from shared.config import Deployment
from shared.errors import EdgeError
from shared.json_limits import MAX_JSON_DEPTH, too_deep
from shared.wire import ChatCompletionRequest, validation_error_param

T = TypeVar("T")
_decode_json = msgspec.json.decode


@dataclass
class Parsed:
    """A validated request."""

    model: str
    raw: dict[str, Any]  # the client's JSON object: forwarded as is, and what the cache key hashes
    stream: bool
    include_usage: bool
    # The chat request it amounts to, for the token estimate of a key's reservation (made only
    # when a key reserves: for a chat request, the validated request itself).
    chat_view: Callable[[], ChatCompletionRequest] | None = None
    # An estimate of its own instead (prompt tokens, the most the answer may hold), given the
    # loaded estimator and the configured completion reserve: for requests that are no chat
    # (embeddings: their input's tokens, no completion).
    estimate: Callable[[TokenEstimator, int], tuple[int, int]] | None = None

    def tokens(self, estimator: TokenEstimator, reserve: int) -> tuple[int, int]:
        """What a virtual key reserves for this request (the estimator loaded)."""
        if self.estimate is not None:
            return self.estimate(estimator, reserve)
        assert self.chat_view is not None, "a Parsed says how it is counted"
        chat = self.chat_view()
        return estimator.prompt(chat), completion_tokens(chat, reserve)


@dataclass(frozen=True)
class Api:
    name: str  # shared.queue.Job.api: the shape the worker delivers the answer in
    parse: Callable[[bytes], Parsed]  # raises EdgeError(400)
    replay: Callable[[bytes, bool], bytes]  # a cached answer (, include_usage) -> its SSE body
    error: Callable[[int, bytes], bytes]  # the gateway's error (OpenAI's envelope) -> this API's
    framing: Framing
    forwarded: tuple[bytes, ...] = ()  # request headers passed to the upstream (and keyed on)
    # Asks a virtual key's limits and budget, and books its usage (token counting does not).
    charged: bool = True
    # An answer the front gives itself instead of queueing (None: queue it), once routed.
    local: Callable[[FrontState, Parsed, Deployment], Awaitable[bytes | None]] | None = None


def parse_json(body: bytes, shape: type[T]) -> tuple[dict[str, Any], T]:
    """The client's JSON object (forwarded as-is) and its validated view. Raises EdgeError(400)."""
    if too_deep(body):  # msgspec would recurse (RecursionError) and so would workers
        raise EdgeError(400, f"Request body nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        raw = _decode_json(body)
    except msgspec.DecodeError as e:
        raise EdgeError(400, f"Request body is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise EdgeError(400, "Request body must be a JSON object.")
    try:
        return raw, msgspec.convert(raw, shape)
    except msgspec.ValidationError as e:
        message, param = validation_error_param(e)
        where = f" (at '{param}')" if param else ""
        raise EdgeError(400, f"Invalid request: {message}{where}", param=param) from None
