"""The fake Azure OpenAI: OpenAI's chat completions at Azure's paths, with Azure's auth and
error envelope.

- `POST /openai/deployments/{deployment}/chat/completions?api-version=...` (without the
  api-version, 404 as Azure answers) and the v1 API, `POST /openai/v1/chat/completions`.
- The key in `api-key`, or a bearer token in `Authorization`.
- Errors as Azure writes them: `{"error": {"code": "429", "message": ...}}` (no `type`), with
  `retry-after` and `retry-after-ms` on a 429; `[[fake:blocked=prompt]]` is Azure's content
  filter refusing the prompt (400, code `content_filter`).
- A stream opens with Azure's `prompt_filter_results` chunk (no choices, empty id and model).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from edge_agent.fake_upstream.common import json_response
from edge_agent.fake_upstream.content import Markers, encode
from edge_agent.fake_upstream.openai_api import OpenAIApi

_MESSAGES = {
    401: "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a "
    "valid key for an active subscription and use a correct regional API endpoint for your resource.",
    404: "Resource not found",
    429: "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 "
    "have exceeded token rate limit of your current tier. Please retry after 1 second.",
    500: "The server had an error while processing your request. Sorry about that!",
}
_FILTER_RESULTS = {
    "hate": {"filtered": False, "severity": "safe"},
    "self_harm": {"filtered": False, "severity": "safe"},
    "sexual": {"filtered": False, "severity": "safe"},
    "violence": {"filtered": False, "severity": "safe"},
}
PROMPT_FILTER_FRAME = (
    b"data: "
    + encode(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": _FILTER_RESULTS}],
        }
    )
    + b"\n\n"
)


class AzureApi(OpenAIApi):
    stream_preamble = PROMPT_FILTER_FRAME

    def check_headers(self, request: web.Request) -> web.Response | None:
        if "deployment" in request.match_info and not request.query.get("api-version"):
            return self.error(404)
        key = request.headers.get("api-key", "").strip()
        auth = request.headers.get("Authorization", "")
        if not key and auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
        if not key:
            return self.error(401)
        required = self.settings.require_key
        if required is not None and key != required:
            return self.error(401)
        return None

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        # A deployment URL names the deployment; the body's model is then optional.
        return str(body.get("model") or request.match_info.get("deployment") or "")

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        return super().validate({**body, "model": body.get("model") or "deployment"})

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        default = _MESSAGES.get(status) or ("Internal server error" if status >= 500 else "Invalid request.")
        error: dict[str, Any] = {"code": code or str(status), "message": message or default}
        if param is not None:
            error["param"] = param
        return json_response({"error": error}, status, headers)

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        if markers.blocked == "prompt":
            message = (
                "The response was filtered due to the prompt triggering Azure OpenAI's content "
                "management policy."
            )
            return self.error(400, message, param="prompt", code="content_filter")
        body = {**body, "model": self.model_of(request, body)}
        return await super().respond(request, body, text, markers)
