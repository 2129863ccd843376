"""POST /v1/embeddings: one more API through the chat path (`chat.chat_completions` with
`EMBEDDINGS`), so it is cached in L1 and L2 under Cache-Control, routed, retried, failed over,
admitted and booked for virtual keys, single-flighted and metered as chat is. Its job says
`api: embeddings`; the worker calls the provider's embeddings API (`edge_workers/embeddings.py`).
"""

from __future__ import annotations

from typing import Any

from edge_front.apis import Api, Parsed, parse_json
from edge_front.reservation import TokenEstimator
from edge_front.streams import CHAT_SSE
from shared.embeddings_wire import EMBEDDINGS_API, EmbeddingsRequest, input_shape


def parse_embeddings_request(body: bytes) -> tuple[dict[str, Any], EmbeddingsRequest]:
    """The client's JSON object and its validated view. Raises EdgeError(400)."""
    raw, request = parse_json(body, EmbeddingsRequest)
    input_shape(request.input)
    if raw.get("encoding_format") == "float":  # the default: keyed (and sent) as if absent
        del raw["encoding_format"]
    return raw, request


def _parse(body: bytes) -> Parsed:
    raw, request = parse_embeddings_request(body)

    def estimate(estimator: TokenEstimator, reserve: int) -> tuple[int, int]:
        # An embedding has no completion: what a key reserves is its input's tokens.
        return input_tokens(estimator, request.input), 0

    return Parsed(request.model, raw, False, False, estimate=estimate)


def input_tokens(estimator: TokenEstimator, value: str | list[Any]) -> int:
    if isinstance(value, str):
        return estimator.text(value)
    if isinstance(value[0], str):
        return sum(estimator.text(text) for text in value)
    if isinstance(value[0], int):
        return len(value)
    return sum(len(tokens) for tokens in value)


def _no_replay(body: bytes, include_usage: bool) -> bytes:
    raise ValueError("embeddings are never streamed")


EMBEDDINGS = Api(EMBEDDINGS_API, _parse, _no_replay, lambda status, body: body, CHAT_SSE)
