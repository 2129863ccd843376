"""What differs between the client APIs the front serves through one request path (chat.py):
how a body is read, how a cached answer streams, the error envelope and the stream framing.
Caching, routing, admission, the queue, retries and metrics are the same for all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edge_front.state import FrontState
from edge_front.streams import Framing
from shared.config import Deployment
from shared.wire import ChatCompletionRequest


@dataclass
class Parsed:
    """A validated request."""

    model: str
    raw: dict[str, Any]  # the client's JSON object: forwarded as is, and what the cache key hashes
    stream: bool
    include_usage: bool
    # The chat request it amounts to, for the token estimate of a key's reservation (made only
    # when a key reserves: for a chat request, the validated request itself).
    chat_view: Callable[[], ChatCompletionRequest]


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
