"""What each inbound endpoint makes of its request body before the path they all share
(`chat.serve`: cache, routing, admission, dispatch, answer): an `Inbound`. Chat completions are
parsed here; embeddings in `edge_front.embeddings`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec

from edge_front.keys import Identity
from edge_front.reservation import TokenEstimator, completion_tokens
from shared.cache_keys import chat_cache_key
from shared.errors import EdgeError
from shared.json_limits import MAX_JSON_DEPTH, too_deep
from shared.queue import JobKind
from shared.wire import ChatCompletionRequest, validation_error_param

_decode_json = msgspec.json.decode
T = TypeVar("T")


def parse_chat_request(body: bytes) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """The client's JSON object (forwarded as-is) and its validated view. Raises EdgeError(400)."""
    return parse_request(body, ChatCompletionRequest)


def parse_request(body: bytes, shape: type[T]) -> tuple[dict[str, Any], T]:
    """The client's JSON object and its view as `shape` (an endpoint's request Struct).
    Raises EdgeError(400)."""
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


@dataclass
class Inbound:
    """What an endpoint makes of its request body, for the path every endpoint shares."""

    kind: JobKind
    model: str
    cache_key: str  # already scoped to the caller's cache namespace
    stream: bool = False
    include_usage: bool = False
    # (prompt tokens, the most the answer may hold), for a key that reserves; given the loaded
    # estimator and the configured completion reserve.
    estimate: Callable[[TokenEstimator, int], tuple[int, int]] | None = None


Parse = Callable[[bytes, Identity], Inbound]


def parse_chat(body: bytes, identity: Identity) -> Inbound:
    raw, chat = parse_chat_request(body)
    stream = bool(chat.stream)
    return Inbound(
        "chat",
        chat.model,
        chat_cache_key(raw, identity.namespace),
        stream,
        bool(stream and chat.stream_options and chat.stream_options.include_usage),
        lambda estimator, reserve: (estimator.prompt(chat), completion_tokens(chat, reserve)),
    )
