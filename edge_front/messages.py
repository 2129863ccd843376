"""Anthropic's Messages API: `POST /v1/messages` (streaming or not) and
`POST /v1/messages/count_tokens`, answered in Anthropic's shapes, events and error envelope.

Both go through the chat completions' request path (chat.py: cache, routing, admission, the
job on the provider's queue, retries, the reply stream, metrics) as an `Api`; the job says
which shape the worker answers in (edge_workers/messages.py). The client's anthropic-version
and anthropic-beta headers go with the job (and into the cache key); no other header does.

count_tokens: for a model served by Anthropic, the request goes to Anthropic's count_tokens
endpoint through the queue, like any request (and is cached the same way): the count is
Anthropic's own, exact for every block type (images, PDFs, tools, thinking) where tiktoken's
cl100k is ~15 % off for Claude, and clients such as Claude Code decide when to compact a
conversation from it. Anthropic does not bill it and it asks no key limit or budget. Other
providers have no such endpoint: the front counts locally with the estimator that reserves a
virtual key's tokens (edge_front/reservation.py), on the request's chat translation, with no
Redis round trip.
"""

from __future__ import annotations

import msgspec

from edge_front.apis import Api, Parsed, parse_json
from edge_front.state import FrontState
from edge_front.streams import Framing
from shared.anthropic_api import FORWARDED_HEADERS, anthropic_error_body, event_frame
from shared.anthropic_events import replay_events
from shared.anthropic_to_chat import CountTokensCall, MessagesCall, chat_view
from shared.config import Deployment

MESSAGES_PATHS = frozenset({b"/v1/messages"})
COUNT_TOKENS_PATHS = frozenset({b"/v1/messages/count_tokens"})
PATHS = MESSAGES_PATHS | COUNT_TOKENS_PATHS

_encode = msgspec.json.Encoder().encode


def error_envelope(status: int, body: bytes) -> bytes:
    return anthropic_error_body(status, body)


def _parse_messages(body: bytes) -> Parsed:
    raw, call = parse_json(body, MessagesCall)
    return Parsed(call.model, raw, bool(call.stream), False, lambda: chat_view(raw))


def _parse_count(body: bytes) -> Parsed:
    raw, call = parse_json(body, CountTokensCall)
    return Parsed(call.model, raw, False, False, lambda: chat_view(raw))


def _replay(message: bytes, include_usage: bool) -> bytes:
    return replay_events(message)


def _no_replay(answer: bytes, include_usage: bool) -> bytes:
    raise ValueError("a token count does not stream")


async def _count_locally(state: FrontState, parsed: Parsed, deployment: Deployment) -> bytes | None:
    if deployment.provider == "anthropic":
        return None  # Anthropic counts its own, through the queue
    await state.estimator.ready()
    return _encode({"input_tokens": parsed.tokens(state.estimator, 0)[0]})


# Anthropic's events are written by the worker (or the replay) whole: a chunk is its own frame.
EVENTS = Framing(
    lambda body: body, b"", lambda status, body: event_frame("error", anthropic_error_body(status, body))
)
_HEADERS = tuple(name.encode() for name in FORWARDED_HEADERS)

MESSAGES = Api("messages", _parse_messages, _replay, error_envelope, EVENTS, _HEADERS)
COUNT_TOKENS = Api(
    "count_tokens", _parse_count, _no_replay, error_envelope, EVENTS, _HEADERS, False, _count_locally
)


def api_of(path: bytes) -> Api | None:
    if path in MESSAGES_PATHS:
        return MESSAGES
    if path in COUNT_TOKENS_PATHS:
        return COUNT_TOKENS
    return None


__all__ = ["COUNT_TOKENS", "MESSAGES", "PATHS", "api_of", "error_envelope"]
