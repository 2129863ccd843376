"""What an embeddings adapter does: turn an OpenAI embeddings request into the provider's HTTP
request(s) (some providers take one input per call, or a bounded batch), and their answers back
into one OpenAI embeddings answer in the encoding the client asked for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import msgspec

from edge_workers.estimate import CHARS_PER_TOKEN
from edge_workers.providers.base import UpstreamRequest
from shared.config import Deployment
from shared.embeddings_wire import EmbeddingsRequest, InputShape, embeddings_body, input_shape, texts_of
from shared.errors import EdgeError
from shared.wire import ErrorDetail

# One upstream answer: its body and headers (Bedrock reports Cohere's token count in a header).
Answer = tuple[bytes, Mapping[str, str]]


class EmbeddingsCall:
    """One client request, as every adapter needs it."""

    __slots__ = ("raw", "request", "shape", "upstream_model")

    def __init__(self, raw: dict[str, Any], upstream_model: str) -> None:
        self.raw = raw  # the client's JSON (validated by the front)
        self.request = msgspec.convert(raw, EmbeddingsRequest)
        self.shape: InputShape = input_shape(self.request.input)
        self.upstream_model = upstream_model

    @property
    def count(self) -> int:
        """How many embeddings the answer must hold."""
        return len(self.request.input) if self.shape in ("texts", "token_lists") else 1

    def texts(self, provider: str) -> list[str]:
        """The inputs as texts; a 400 for token input, which only OpenAI's API takes."""
        if self.shape in ("tokens", "token_lists"):
            raise EdgeError(
                400,
                f"Token arrays cannot be sent to provider {provider}: give 'input' as text.",
                param="input",
                code="unsupported_input",
            )
        return texts_of(self.request.input)

    def answer(self, vectors: list[list[float]], prompt_tokens: int) -> bytes:
        """The OpenAI answer for `vectors`, in the encoding the client asked for."""
        if len(vectors) != self.count:
            raise EdgeError(502, f"upstream answered {len(vectors)} embeddings for {self.count} inputs")
        return embeddings_body(
            vectors, self.upstream_model, prompt_tokens, self.request.encoding_format or "float"
        )

    def finish(self, provider: str, vectors: list[list[float]], counted: int) -> tuple[bytes, int]:
        """(the answer, its prompt tokens) for a provider that may report no count (0): then
        estimated from the texts."""
        tokens = counted or estimated_tokens(self.texts(provider))
        return self.answer(vectors, tokens), tokens


def not_embeddings(provider: str, error: msgspec.DecodeError) -> EdgeError:
    return EdgeError(502, f"upstream {provider} answered 2xx with a body that is not embeddings ({error})")


class Embedder(Protocol):
    def build_requests(
        self, call: EmbeddingsCall, deployment: Deployment, api_key: str
    ) -> list[UpstreamRequest]:
        """The upstream calls to make (run concurrently). Raises EdgeError(400) for a request
        this provider cannot honour."""
        ...

    def parse_answers(self, call: EmbeddingsCall, answers: list[Answer]) -> tuple[bytes, int]:
        """The 2xx answers, in the order of `build_requests` -> (OpenAI embeddings JSON, prompt
        tokens). Raises EdgeError(502) for an answer that is not one."""
        ...

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        """A non-2xx upstream body -> the error in OpenAI's terms."""
        ...


def estimated_tokens(texts: list[str]) -> int:
    """For upstreams that report no token count: the chat path's estimate (edge_workers/estimate.py,
    four characters a token), per input; what the key is booked and the answer's `usage` says."""
    return sum(-(-len(text) // CHARS_PER_TOKEN) for text in texts)


def batches(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
