"""Bedrock embeddings through InvokeModel (`{endpoint}/model/{model id}/invoke`, SigV4-signed):

- Amazon Titan Text Embeddings (`amazon.titan-embed-text-v2:0`, `-v1`): one text per call, so
  a list becomes concurrent calls; `dimensions` (v2 only: 256, 512 or 1024, checked by Bedrock)
  passes as `dimensions`; tokens from `inputTextTokenCount`.
- Cohere Embed (`cohere.embed-english-v3`, `cohere.embed-multilingual-v3`, `cohere.embed-v4:0`,
  and their cross-region `us.`/`eu.`/... ids): up to 96 texts a call; `input_type` (Cohere's
  own, default `search_document`) and `truncate` pass through from the body; `dimensions` is
  `output_dimension` (v4 only); tokens from the `X-Amzn-Bedrock-Input-Token-Count` header.

Both answer floats only: base64 is made here. Token arrays are a 400, as for every upstream
but OpenAI's."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from edge_workers.providers.base import UpstreamRequest, unreadable_error
from edge_workers.providers.embeddings.aws import sign
from edge_workers.providers.embeddings.base import Answer, EmbeddingsCall, batches, not_embeddings
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import ErrorDetail

COHERE_BATCH = 96  # Cohere Embed's most texts per call
TOKEN_COUNT_HEADER = "X-Amzn-Bedrock-Input-Token-Count"
_JSON = {"Content-Type": "application/json", "Accept": "application/json"}
_encode = msgspec.json.Encoder().encode


class _Titan(msgspec.Struct, rename="camel"):
    embedding: list[float]
    input_text_token_count: int = 0


class _Cohere(msgspec.Struct):
    # Cohere answers a list of vectors, or vectors by type when `embedding_types` was given.
    embeddings: list[list[float]] | dict[str, list[list[float]]]


class _BedrockError(msgspec.Struct):
    message: str | None = None
    Message: str | None = None  # some exceptions spell it so


_decode_titan = msgspec.json.Decoder(_Titan).decode
_decode_cohere = msgspec.json.Decoder(_Cohere).decode
_decode_error = msgspec.json.Decoder(_BedrockError).decode

_TYPES = {400: "invalid_request_error", 404: "invalid_request_error", 429: "rate_limit_error"}


def family(model: str) -> str:
    """ "titan" or "cohere" (a cross-region id's `us.` prefix aside); else a 400."""
    bare = model.split(".", 1)[1] if model.split(".", 1)[0] in ("us", "eu", "apac", "global") else model
    if bare.startswith("amazon.titan-embed-text"):
        return "titan"
    if bare.startswith("cohere.embed"):
        return "cohere"
    raise EdgeError(
        400,
        f"Bedrock model '{model}' is not an embeddings model this gateway speaks "
        "(amazon.titan-embed-text-*, cohere.embed-*).",
        param="model",
    )


def invoke_url(deployment: Deployment, model: str) -> str:
    """The model id percent-encoded as the AWS SDKs send it (`:` as `%3A`): signed that way."""
    return f"{deployment.base_url}/model/{quote(model, safe='')}/invoke"


def _unsupported_dimensions(model: str) -> EdgeError:
    return EdgeError(400, f"Bedrock model '{model}' does not take 'dimensions'.", param="dimensions")


class BedrockEmbedder:
    def build_requests(
        self, call: EmbeddingsCall, deployment: Deployment, api_key: str
    ) -> list[UpstreamRequest]:
        texts = call.texts("bedrock")
        model = call.upstream_model
        dimensions = call.request.dimensions
        bodies: list[dict[str, Any]]
        if family(model) == "titan":
            if dimensions is not None and "text-v1" in model:
                raise _unsupported_dimensions(model)
            extra = {} if dimensions is None else {"dimensions": dimensions}
            bodies = [{"inputText": text, **extra} for text in texts]
        else:
            options: dict[str, Any] = {"input_type": call.raw.get("input_type") or "search_document"}
            if isinstance(call.raw.get("truncate"), str):
                options["truncate"] = call.raw["truncate"]
            if dimensions is not None:
                if "embed-v4" not in model:
                    raise _unsupported_dimensions(model)
                options["output_dimension"] = dimensions
            bodies = [{"texts": batch, **options} for batch in batches(texts, COHERE_BATCH)]
        url = invoke_url(deployment, model)
        requests = []
        for body in bodies:
            payload = _encode(body)
            requests.append(
                UpstreamRequest(url, sign(deployment, url, payload, dict(_JSON)), payload, encoded=True)
            )
        return requests

    def parse_answers(self, call: EmbeddingsCall, answers: list[Answer]) -> tuple[bytes, int]:
        vectors: list[list[float]] = []
        tokens = 0
        try:
            if family(call.upstream_model) == "titan":
                for body, _ in answers:
                    titan = _decode_titan(body)
                    vectors.append(titan.embedding)
                    tokens += titan.input_text_token_count
            else:
                for body, headers in answers:
                    cohere = _decode_cohere(body)
                    found = cohere.embeddings
                    vectors.extend(found if isinstance(found, list) else found.get("float", []))
                    counted = headers.get(TOKEN_COUNT_HEADER, "")
                    tokens += int(counted) if counted.isdigit() else 0
        except msgspec.DecodeError as e:
            raise not_embeddings("bedrock", e) from None
        return call.finish("bedrock", vectors, tokens)

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        try:
            error = _decode_error(body)
        except msgspec.DecodeError:
            return unreadable_error(status, body)
        message = error.message or error.Message or f"HTTP {status}"
        return ErrorDetail(
            message=message,
            type=_TYPES.get(status, "upstream_error" if status >= 500 else "invalid_request_error"),
        )
