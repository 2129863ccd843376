"""The fake OpenAI `POST /v1/embeddings` and Azure OpenAI's forms of it, plus the deterministic
vectors every fake embeddings API answers with.

A vector is a function of the input's text (or of its token array) and the dimensions only:
tests compute `vector_for(...)` themselves to check the order of a batch, caching and base64.
Its components are multiples of 2**-15, exact in float32, so a base64 (float32) answer decodes
to exactly the floats a float answer holds. Markers (`[[fake:status=429]]`, ...) are read from
the input texts, as the chat APIs read them from the last user message.
"""

from __future__ import annotations

import contextvars
import hashlib
import sys
from array import array
from typing import Any

from aiohttp import web

from edge_agent.fake_upstream.common import json_response
from edge_agent.fake_upstream.content import Markers, encode, strip_markers
from edge_agent.fake_upstream.openai_api import OpenAIApi
from shared.embeddings_wire import to_base64

# Dimensions of the models tests and demos name; any other model gets DEFAULT_DIMENSIONS.
DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "gemini-embedding-001": 3072,
    "text-embedding-004": 768,
    "amazon.titan-embed-text-v2:0": 1024,
    "amazon.titan-embed-text-v1": 1536,
    "cohere.embed-english-v3": 1024,
    "cohere.embed-multilingual-v3": 1024,
    "cohere.embed-v4:0": 1536,
}
DEFAULT_DIMENSIONS = 256


def dimensions_of(model: str) -> int:
    """A model's default dimensions (Gemini's `models/` and Bedrock's cross-region prefixes aside)."""
    bare = model.removeprefix("models/")
    region, _, rest = bare.partition(".")
    if region in ("us", "eu", "apac", "global") and rest:
        bare = rest
    return DIMENSIONS.get(bare, DEFAULT_DIMENSIONS)


def vector_for(item: str | list[int], dimensions: int) -> list[float]:
    """The fake's embedding of one input (a text or a token array)."""
    seed = item.encode() if isinstance(item, str) else encode(item)
    components = array("h")  # the hash's bytes as little-endian int16s
    components.frombytes(hashlib.shake_256(seed).digest(2 * dimensions))
    if sys.byteorder != "little":
        components.byteswap()
    return [c / 32768 for c in components]


def tokens_for(item: str | list[int]) -> int:
    """The fake's token count of one input: its words plus one (a token array: its length)."""
    return len(item.split()) + 1 if isinstance(item, str) else len(item)


def openai_inputs(value: Any) -> list[str | list[int]] | None:
    """The inputs of an OpenAI `input`, or None when it is not one of its four forms."""
    if isinstance(value, str):
        return [value] if value else None
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) and v for v in value):
        return list(value)
    if all(isinstance(v, int) for v in value):
        return [value]
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return list(value)
    return None


# The model an Azure route names in its path (the body need not say it).
_path_model: contextvars.ContextVar[str | None] = contextvars.ContextVar("fake_path_model", default=None)


class OpenAIEmbeddingsApi(OpenAIApi):
    """`POST /v1/embeddings` as OpenAI answers it: float or base64, `dimensions` (refused for
    ada-002, as OpenAI does), usage."""

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        model = _path_model.get() or body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        body["model"] = model
        if openai_inputs(body.get("input")) is None:
            return self.error(
                400, "'input' is invalid: give a string, strings or token arrays.", param="input"
            )
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if model == "text-embedding-ada-002":
                return self.error(
                    400, "This model does not support specifying dimensions.", param="dimensions"
                )
            if not isinstance(dimensions, int) or dimensions < 1:
                return self.error(
                    400, f"{dimensions!r} is not a valid value for 'dimensions'.", param="dimensions"
                )
        if body.get("encoding_format") not in (None, "float", "base64"):
            return self.error(400, "'encoding_format' must be float or base64.", param="encoding_format")
        return None

    def marker_text(self, body: dict[str, Any]) -> str:
        inputs = openai_inputs(body.get("input")) or []
        return " ".join(i for i in inputs if isinstance(i, str))

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        model = body["model"]
        inputs = openai_inputs(body["input"]) or []
        dimensions = body.get("dimensions") or dimensions_of(model)
        base64 = body.get("encoding_format") == "base64"
        data = []
        for i, item in enumerate(inputs):
            vector = vector_for(strip_markers(item) if isinstance(item, str) else item, dimensions)
            data.append(
                {"object": "embedding", "index": i, "embedding": to_base64(vector) if base64 else vector}
            )
        tokens = sum(tokens_for(item) for item in inputs)
        return json_response(
            {
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )


class AzureEmbeddingsApi(OpenAIEmbeddingsApi):
    """Azure OpenAI: `/openai/deployments/{deployment}/embeddings?api-version=...` (the model is
    the path's deployment) and `/openai/v1/embeddings`; the key in `api-key` (or a bearer token)."""

    def check_headers(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("api-key", "")
        if not key:
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key:
            return self.error(
                401,
                "Access denied due to missing subscription key; include it in the api-key header.",
            )
        required = self.settings.require_key
        if required is not None and key != required:
            return self.error(401, "Access denied due to invalid subscription key or wrong API endpoint.")
        if "deployment" in request.match_info and not request.query.get("api-version"):
            return self.error(404, "Resource not found")
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = _path_model.set(request.match_info.get("deployment"))
        try:
            return await super().handle(request)
        finally:
            _path_model.reset(token)


def add_routes(app: web.Application, openai: OpenAIEmbeddingsApi, azure: AzureEmbeddingsApi) -> None:
    app.router.add_post("/v1/embeddings", openai.handle)
    app.router.add_post("/openai/deployments/{deployment}/embeddings", azure.handle)
    app.router.add_post("/openai/v1/embeddings", azure.handle)
