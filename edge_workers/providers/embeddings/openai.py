"""OpenAI, any OpenAI-compatible server, and Azure OpenAI: one call, the client's body as sent
(but for the upstream model name). The answer passes through byte for byte when it comes in the
encoding the client asked for; a server that ignored `encoding_format` (some compatible ones
answer floats only) gets converted here."""

from __future__ import annotations

import msgspec

from edge_workers.providers.azure import AzureAdapter, azure_url
from edge_workers.providers.base import UpstreamRequest
from edge_workers.providers.embeddings.base import Answer, EmbeddingsCall
from edge_workers.providers.openai import OpenAIAdapter
from shared.config import Deployment
from shared.embeddings_wire import EmbeddingsResponse, EmbeddingsUsage, from_base64
from shared.errors import EdgeError
from shared.wire import ErrorDetail, ErrorEnvelope

_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(EmbeddingsResponse).decode


class _RawEmbedding(msgspec.Struct):
    index: int
    embedding: msgspec.Raw


class _Glance(msgspec.Struct):
    data: list[_RawEmbedding]
    usage: EmbeddingsUsage | None = None


_glance = msgspec.json.Decoder(_Glance).decode


def _first(raw: msgspec.Raw) -> int:
    """The first byte of a raw JSON value (`"` for a string, `[` for an array)."""
    view = memoryview(raw)
    return view[0] if len(view) else -1


_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


class OpenAIEmbedder:
    """The chat adapter (`chat`) says the headers and reads the errors: they are the same API's."""

    chat: OpenAIAdapter = OpenAIAdapter()

    def url(self, deployment: Deployment, model: str) -> str:
        return f"{deployment.base_url}/embeddings"

    def build_requests(
        self, call: EmbeddingsCall, deployment: Deployment, api_key: str
    ) -> list[UpstreamRequest]:
        body = dict(call.raw)  # every field passes through, ones this gateway does not model too
        body["model"] = call.upstream_model
        return [
            UpstreamRequest(
                url=self.url(deployment, call.upstream_model),
                headers=self.chat.headers(deployment, api_key),
                body=_encode(body),
            )
        ]

    def parse_answers(self, call: EmbeddingsCall, answers: list[Answer]) -> tuple[bytes, int]:
        body = answers[0][0]
        try:
            # The vectors stay unparsed (a float answer's numbers cost ~70 us to read): checked
            # for their form only, and passed through as they came when it is the one asked for.
            glance = _glance(body)
        except msgspec.DecodeError as e:
            raise EdgeError(502, _not_embeddings(body, e)) from None
        tokens = glance.usage.prompt_tokens if glance.usage is not None else 0
        opening = ord('"') if call.request.encoding_format == "base64" else ord("[")
        if len(glance.data) == call.count and all(_first(e.embedding) == opening for e in glance.data):
            return body, tokens
        try:
            answer = _decode_answer(body)
        except msgspec.DecodeError as e:
            raise EdgeError(502, _not_embeddings(body, e)) from None
        ordered = sorted(answer.data, key=lambda e: e.index)
        vectors = [from_base64(e.embedding) if isinstance(e.embedding, str) else e.embedding for e in ordered]
        return call.answer(vectors, tokens), tokens

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        return self.chat.parse_error(status, body)


class AzureEmbedder(OpenAIEmbedder):
    """Azure OpenAI: the URL forms, auth and errors of the Azure chat adapter
    (`providers/azure.py`), its `embeddings` operation."""

    chat: OpenAIAdapter = AzureAdapter()

    def url(self, deployment: Deployment, model: str) -> str:
        return azure_url(deployment, model, "embeddings")


def _not_embeddings(body: bytes, error: msgspec.DecodeError) -> str:
    try:  # some servers report failures as 200 with an error object
        detail = _decode_error(body).error
    except msgspec.DecodeError:
        return f"upstream answered 2xx with a body that is not an embeddings list ({error})"
    return f"upstream answered 2xx with an error: {detail.message}"
