"""Gemini API embeddings: `models/{model}:embedContent` for one text, `:batchEmbedContents`
(at most 100 texts a call, so bigger lists are split and sent concurrently) for a list; the key
in `x-goog-api-key`. `dimensions` becomes `outputDimensionality`; `task_type` (Gemini's own,
e.g. RETRIEVAL_DOCUMENT) passes through. Gemini answers floats only: base64 is made here."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from edge_workers.providers.base import UpstreamRequest
from edge_workers.providers.embeddings.base import Answer, EmbeddingsCall, batches, not_embeddings
from edge_workers.providers.gemini import GeminiAdapter
from shared.config import Deployment
from shared.wire import ErrorDetail

BATCH_LIMIT = 100  # batchEmbedContents' most requests per call
GEMINI = GeminiAdapter()

_encode = msgspec.json.Encoder().encode


class _Values(msgspec.Struct):
    values: list[float]


class _UsageMetadata(msgspec.Struct, rename="camel"):
    prompt_token_count: int = 0


class _Single(msgspec.Struct, rename="camel"):
    embedding: _Values
    usage_metadata: _UsageMetadata | None = None


class _Batch(msgspec.Struct, rename="camel"):
    embeddings: list[_Values]
    usage_metadata: _UsageMetadata | None = None


_decode_single = msgspec.json.Decoder(_Single).decode
_decode_batch = msgspec.json.Decoder(_Batch).decode


def model_path(model: str) -> str:
    """`models/<name>` (a configured model may be given with or without the prefix)."""
    return "models/" + quote(model.removeprefix("models/"), safe="-._")


class GeminiEmbedder:
    def build_requests(
        self, call: EmbeddingsCall, deployment: Deployment, api_key: str
    ) -> list[UpstreamRequest]:
        texts = call.texts("gemini")
        model = model_path(call.upstream_model)
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["x-goog-api-key"] = api_key
        options: dict[str, Any] = {}
        if call.request.dimensions is not None:
            options["outputDimensionality"] = call.request.dimensions
        task = call.raw.get("task_type")
        if isinstance(task, str):
            options["taskType"] = task
        if call.shape == "text":
            body = {"content": {"parts": [{"text": texts[0]}]}, **options}
            return [UpstreamRequest(f"{deployment.base_url}/{model}:embedContent", headers, _encode(body))]
        url = f"{deployment.base_url}/{model}:batchEmbedContents"
        return [
            UpstreamRequest(
                url,
                headers,
                _encode(
                    {
                        "requests": [
                            {"model": model, "content": {"parts": [{"text": t}]}, **options} for t in batch
                        ]
                    }
                ),
            )
            for batch in batches(texts, BATCH_LIMIT)
        ]

    def parse_answers(self, call: EmbeddingsCall, answers: list[Answer]) -> tuple[bytes, int]:
        vectors: list[list[float]] = []
        counted = 0
        try:
            if call.shape == "text":
                single = _decode_single(answers[0][0])
                vectors.append(single.embedding.values)
                counted = single.usage_metadata.prompt_token_count if single.usage_metadata else 0
            else:
                for body, _ in answers:
                    batch = _decode_batch(body)
                    vectors.extend(e.values for e in batch.embeddings)
                    counted += batch.usage_metadata.prompt_token_count if batch.usage_metadata else 0
        except msgspec.DecodeError as e:
            raise not_embeddings("gemini", e) from None
        return call.finish("gemini", vectors, counted)

    def parse_error(self, status: int, body: bytes) -> ErrorDetail:
        return GEMINI.parse_error(status, body)  # the chat adapter's reading of google.rpc errors
