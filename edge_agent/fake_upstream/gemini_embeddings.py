"""The fake Gemini API `models/{model}:embedContent` and `:batchEmbedContents` (key in
`x-goog-api-key`, errors in Google's `{"error": {"code", "message", "status"}}`), answering the
same deterministic vectors as the fake OpenAI embeddings (`embeddings.vector_for`). Like the
real API it reports no token counts."""

from __future__ import annotations

import contextvars
from typing import Any

from aiohttp import web

from edge_agent.fake_upstream.common import BaseApi, json_response
from edge_agent.fake_upstream.content import Markers, strip_markers
from edge_agent.fake_upstream.embeddings import dimensions_of, vector_for

BATCH_LIMIT = 100

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}

# (model, method) of the request being handled: the path names them, not the body.
_route: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar(
    "fake_gemini_route", default=("", "")
)


def _text_of(content: Any) -> str | None:
    if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
        return None
    texts = [p.get("text") for p in content["parts"] if isinstance(p, dict)]
    if not texts or not all(isinstance(t, str) for t in texts):
        return None
    return "".join(t for t in texts if isinstance(t, str))


def _requests(body: dict[str, Any], method: str) -> list[dict[str, Any]] | None:
    if method == "embedContent":
        return [body]
    requests = body.get("requests")
    return requests if isinstance(requests, list) and all(isinstance(r, dict) for r in requests) else None


class GeminiEmbeddingsApi(BaseApi):
    def check_headers(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key", "")
        if not key:
            return self.error(403, "Method doesn't allow unregistered callers. Please use an API Key.")
        required = self.settings.require_key
        if required is not None and key != required:
            return self.error(400, "API key not valid. Please pass a valid API key.")
        return None

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        model, method = _route.get()
        body["model"] = model
        requests = _requests(body, method)
        if requests is None or not requests:
            return self.error(400, "Invalid JSON payload: 'requests' must be a non-empty list.")
        if len(requests) > BATCH_LIMIT:
            return self.error(
                400, f"* BatchEmbedContentsRequest.requests: at most {BATCH_LIMIT} requests are allowed"
            )
        for request in requests:
            if _text_of(request.get("content")) is None:
                return self.error(400, "* EmbedContentRequest.content: contains no parts with text")
            if method == "batchEmbedContents" and request.get("model") != f"models/{model}":
                return self.error(400, "* BatchEmbedContentsRequest.model: must match the model in the URL")
            dims = request.get("outputDimensionality")
            if dims is not None and (not isinstance(dims, int) or not 1 <= dims <= 3072):
                return self.error(400, "* outputDimensionality: must be between 1 and 3072")
        return None

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> web.Response:
        state = _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        body = {"error": {"code": status, "message": message or f"HTTP {status}", "status": state}}
        return json_response(body, status, headers)

    def marker_text(self, body: dict[str, Any]) -> str:
        requests = _requests(body, _route.get()[1]) or []
        return " ".join(_text_of(r.get("content")) or "" for r in requests)

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        model, method = _route.get()
        embeddings = []
        for item in _requests(body, method) or []:
            dims = item.get("outputDimensionality") or dimensions_of(model)
            embeddings.append(
                {"values": vector_for(strip_markers(_text_of(item.get("content")) or ""), dims)}
            )
        if method == "embedContent":
            return json_response({"embedding": embeddings[0]})
        return json_response({"embeddings": embeddings})

    async def embed(self, request: web.Request) -> web.StreamResponse:
        return await self._on(request, "embedContent")

    async def batch(self, request: web.Request) -> web.StreamResponse:
        return await self._on(request, "batchEmbedContents")

    async def _on(self, request: web.Request, method: str) -> web.StreamResponse:
        token = _route.set((request.match_info["model"], method))
        try:
            return await self.handle(request)
        finally:
            _route.reset(token)


def add_routes(app: web.Application, api: GeminiEmbeddingsApi) -> None:
    app.router.add_post("/v1beta/models/{model}:embedContent", api.embed)
    app.router.add_post("/v1beta/models/{model}:batchEmbedContents", api.batch)
