"""OpenAI, any OpenAI-compatible server, and Azure OpenAI: one call, the client's body as sent
(but for the upstream model name). The answer passes through byte for byte when it comes in the
encoding the client asked for; a server that ignored `encoding_format` (some compatible ones
answer floats only) gets converted here."""

from __future__ import annotations

from urllib.parse import quote

import msgspec

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
OPENAI_ERRORS = OpenAIAdapter()

# The newest GA api-version when none is configured (dimensions and base64 need 2023-05-15+).
AZURE_API_VERSION = "2024-10-21"


class OpenAIEmbedder:
    def url(self, deployment: Deployment, model: str) -> str:
        return f"{deployment.base_url}/embeddings"

    def headers(self, deployment: Deployment, api_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        return headers

    def build_requests(
        self, call: EmbeddingsCall, deployment: Deployment, api_key: str
    ) -> list[UpstreamRequest]:
        body = dict(call.raw)  # every field passes through, ones this gateway does not model too
        body["model"] = call.upstream_model
        return [
            UpstreamRequest(
                url=self.url(deployment, call.upstream_model),
                headers=self.headers(deployment, api_key),
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
        return OPENAI_ERRORS.parse_error(status, body)  # the chat adapter's: the same envelope


class AzureEmbedder(OpenAIEmbedder):
    """Azure OpenAI: the deployment's `model` is the Azure deployment name. URL forms:
    `{base}/openai/deployments/{model}/embeddings?api-version=...` (the default), a base_url
    that already names the deployment (`.../openai/deployments/{name}`), or the v1 API
    (`api_version: v1`, or a base_url ending in `/openai/v1`: `{base}/embeddings`, the model in
    the body). The key goes in `api-key` (or as a bearer token with `auth: bearer`)."""

    def url(self, deployment: Deployment, model: str) -> str:
        base = deployment.base_url
        version = deployment.api_version or AZURE_API_VERSION
        if base.endswith("/openai/v1"):
            return f"{base}/embeddings"
        if version == "v1":
            return f"{base}/openai/v1/embeddings"
        if "/openai/deployments/" not in base:
            base = f"{base}/openai/deployments/{quote(model, safe='')}"
        return f"{base}/embeddings?api-version={quote(version, safe='')}"

    def headers(self, deployment: Deployment, api_key: str) -> dict[str, str]:
        if deployment.auth == "bearer":
            return super().headers(deployment, api_key)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["api-key"] = api_key
        return headers


def _not_embeddings(body: bytes, error: msgspec.DecodeError) -> str:
    try:  # some servers report failures as 200 with an error object
        detail = _decode_error(body).error
    except msgspec.DecodeError:
        return f"upstream answered 2xx with a body that is not an embeddings list ({error})"
    return f"upstream answered 2xx with an error: {detail.message}"
