"""POST /v1/embeddings: validated here, then the chat path's own machinery (`chat.serve`): the
same L1/L2 cache and Cache-Control handling, routing, admission, dispatch to the provider's
queue as a job of kind "embeddings", and the same metrics and access log. The worker calls the
provider's embeddings API (`edge_workers.embeddings`)."""

from __future__ import annotations

from typing import Any

from starlette.types import Receive, Scope, Send

from edge_front.chat import serve
from edge_front.inbound import Inbound, parse_request
from edge_front.keys import Identity
from edge_front.reservation import TokenEstimator
from edge_front.state import FrontState
from shared.cache_keys import embeddings_cache_key
from shared.embeddings_wire import EmbeddingsRequest, input_shape


def parse_embeddings_request(body: bytes) -> tuple[dict[str, Any], EmbeddingsRequest]:
    """The client's JSON object and its validated view. Raises EdgeError(400)."""
    raw, request = parse_request(body, EmbeddingsRequest)
    input_shape(request.input)
    return raw, request


def parse_embeddings(body: bytes, identity: Identity) -> Inbound:
    raw, request = parse_embeddings_request(body)

    def estimate(estimator: TokenEstimator, reserve: int) -> tuple[int, int]:
        # An embedding has no completion: what the key reserves is its input's tokens.
        return input_tokens(estimator, request.input), 0

    return Inbound(
        "embeddings", request.model, embeddings_cache_key(raw, identity.namespace), estimate=estimate
    )


def input_tokens(estimator: TokenEstimator, value: str | list[Any]) -> int:
    if isinstance(value, str):
        return estimator.text(value)
    if isinstance(value[0], str):
        return sum(estimator.text(text) for text in value)
    if isinstance(value[0], int):
        return len(value)
    return sum(len(tokens) for tokens in value)


async def embeddings(
    state: FrontState, scope: Scope, receive: Receive, send: Send, identity: Identity
) -> None:
    """POST /v1/embeddings as a plain ASGI handler, for a caller `EdgeApp` already identified."""
    await serve(state, scope, receive, send, identity, parse_embeddings)
