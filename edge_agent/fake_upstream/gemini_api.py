"""The fake Gemini API: `POST /v1beta/models/{model}:generateContent` and
`:streamGenerateContent?alt=sse`, with the key in `x-goog-api-key` (or `?key=`).

Like the real service it refuses fields it does not know (400 "Unknown name"), so a worker
that sends a misspelt or OpenAI-only field fails here too. Errors are google.rpc statuses; a
429 is RESOURCE_EXHAUSTED with its wait in a RetryInfo detail (no Retry-After header).
`[[fake:blocked=prompt]]` answers a blocked prompt (promptFeedback, no candidate),
`[[fake:blocked=answer]]` a candidate stopped by SAFETY.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from edge_agent.fake_upstream.common import SSE_HEADERS, BaseApi, Streamer, format_seconds, json_response
from edge_agent.fake_upstream.content import (
    Completion,
    Markers,
    ToolCall,
    complete,
    encode,
    make_tool_call,
    random_id,
    string_list,
)
from edge_agent.fake_upstream.schema import instance

# status -> (google.rpc status, default message)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    403: (
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without established identity).",
    ),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
    ),
    500: ("INTERNAL", "An internal error has occurred."),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later."),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}
_TOP_LEVEL = {
    "contents",
    "systemInstruction",
    "tools",
    "toolConfig",
    "generationConfig",
    "safetySettings",
    "cachedContent",
}
_GENERATION = {
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "presencePenalty",
    "frequencyPenalty",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
}
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")


def error_body(status: int, message: str | None = None, retry_delay: float | None = None) -> dict[str, Any]:
    name, default = _ERRORS.get(status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", ""))
    error: dict[str, Any] = {
        "code": status,
        "message": message or default or f"HTTP {status}",
        "status": name,
    }
    if retry_delay is not None:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{format_seconds(retry_delay)}s",
            }
        ]
    return {"error": error}


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + encode(data) + b"\r\n\r\n"  # Google's SSE ends lines with CRLF


STREAM_ERROR_FRAME = sse(error_body(500))


def _texts(content: Any) -> list[str]:
    parts = content.get("parts") if isinstance(content, dict) else None
    return [p["text"] for p in parts or () if isinstance(p, dict) and isinstance(p.get("text"), str)]


def _lower_types(schema: Any) -> Any:
    """Gemini's Schema (upper-case types, nullable) as the JSON Schema the generator reads."""
    if isinstance(schema, list):
        return [_lower_types(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _lower_types(v) for k, v in schema.items()}
    if isinstance(out.get("type"), str):
        out["type"] = out["type"].lower()
    return out


def unknown_name(name: str, where: str | None = None) -> str:
    at = f" at '{where}'" if where else ""
    return f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'


def _validate_part(part: Any, where: str) -> str | None:
    if not isinstance(part, dict):
        return f"{where}: a part must be an object"
    present = [k for k in _PART_DATA if k in part]
    if len(present) != 1:
        return f"{where}: exactly one of {', '.join(_PART_DATA)} must be set, got {present or 'none'}"
    unknown = set(part) - {*_PART_DATA, "thought", "thoughtSignature"}
    if unknown:
        return unknown_name(sorted(unknown)[0], where)
    return None


class GeminiApi(BaseApi):
    def check_headers(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-goog-api-key", "") or request.query.get("key", "")
        if not key:
            return self.error(403)
        required = self.settings.require_key
        if required is not None and key != required:
            body = error_body(400, "API key not valid. Please pass a valid API key.")
            body["error"]["details"] = [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
            ]
            return json_response(body, 400)
        model, _, action = request.match_info["target"].partition(":")
        if action not in ("generateContent", "streamGenerateContent"):
            return self.error(404, f"Method {action or '(none)'} is not found for models/{model}.")
        if action == "streamGenerateContent" and request.query.get("alt") != "sse":
            return self.error(400, "this fake streams with ?alt=sse only")
        return None

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        return request.match_info["target"].partition(":")[0]

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        unknown = set(body) - _TOP_LEVEL
        if unknown:
            name = sorted(unknown)[0]
            return self.error(400, unknown_name(name))
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            return self.error(400, "* GenerateContentRequest.contents: contents is not specified")
        for i, content in enumerate(contents):
            if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
                return self.error(400, f"contents[{i}].role: Please use a valid role: user, model.")
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                return self.error(400, f"contents[{i}].parts: must not be empty")
            for j, part in enumerate(parts):
                problem = _validate_part(part, f"contents[{i}].parts[{j}]")
                if problem:
                    return self.error(400, problem)
        config = body.get("generationConfig") or {}
        unknown = set(config) - _GENERATION if isinstance(config, dict) else {"generationConfig"}
        if unknown:
            name = sorted(unknown)[0]
            return self.error(400, unknown_name(name, "generation_config"))
        return None

    def marker_text(self, body: dict[str, Any]) -> str:
        for content in reversed(body["contents"]):
            if isinstance(content, dict) and content.get("role") == "user":
                return " ".join(_texts(content))
        return ""

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,  # google.rpc has no OpenAI-style code
    ) -> web.Response:
        return json_response(error_body(status, message), status, headers)

    def status_error(
        self, status: int, retry_after: float | None, code: str | None = None, message: str | None = None
    ) -> web.Response:
        delay = retry_after if retry_after is not None else (1.0 if status == 429 else None)
        return json_response(error_body(status, message, delay), status)

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        model = self.model_of(request, body)
        contents = body["contents"]
        config = body.get("generationConfig") or {}
        prompt = sum(len(" ".join(_texts(c)).split()) + 3 for c in contents)
        prompt += len(" ".join(_texts(body.get("systemInstruction"))).split())
        stream = request.match_info["target"].endswith(":streamGenerateContent")
        if markers.blocked == "prompt":
            answer = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": _usage(prompt, 0)}
            return await self._stream(request, [answer], markers) if stream else json_response(answer)
        results = self._results(body, config, contents, text, markers)
        tokens = sum(r.tokens for r in results)
        if stream:
            return await self._stream(
                request, self._stream_answers(results, model, prompt, tokens, markers), markers
            )
        candidates = []
        for i, result in enumerate(results):
            parts = [_part(result)]
            candidates.append(
                {
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": _finish(result, markers),
                    "index": i,
                }
            )
            if markers.blocked == "answer":
                candidates[-1].pop("content")
        return json_response(
            {
                "candidates": candidates,
                "usageMetadata": _usage(prompt, tokens),
                "modelVersion": model,
                "responseId": random_id(22),
            }
        )

    def _results(
        self, body: dict[str, Any], config: dict[str, Any], contents: list[Any], text: str, markers: Markers
    ) -> list[Completion | ToolCall]:
        n = config.get("candidateCount") or 1
        tool = _pick_tool(body)
        if tool is not None:
            return [make_tool_call("", tool[0], _lower_types(tool[1]), text) for _ in range(n)]
        if config.get("responseMimeType") == "application/json":
            schema = _lower_types(config.get("responseSchema"))
            value = (
                instance(schema, text)
                if isinstance(schema, dict)
                else {"answer": text.strip()[:40] or "text"}
            )
            document = json.dumps(value)
            return [Completion(document, max(1, len(document) // 4))] * n
        seed = encode(contents)
        limit = config.get("maxOutputTokens")
        stops = string_list(config.get("stopSequences"))
        return [
            complete(seed, i, text, markers.words, limit if isinstance(limit, int) else None, stops)
            for i in range(n)
        ]

    def _stream_answers(
        self, results: list[Completion | ToolCall], model: str, prompt: int, tokens: int, markers: Markers
    ) -> list[dict[str, Any]]:
        answers: list[dict[str, Any]] = []
        response_id = random_id(22)
        for i, result in enumerate(results):
            pieces = (
                [_part(result)] if isinstance(result, ToolCall) else [{"text": p} for p in result.pieces()]
            )
            if markers.blocked == "answer":
                pieces = pieces[:1]
            for part in pieces:
                candidate = {"content": {"parts": [part], "role": "model"}, "index": i}
                answers.append({"candidates": [candidate], "modelVersion": model, "responseId": response_id})
        finals = [
            {
                "content": {"parts": [{"text": ""}], "role": "model"},
                "finishReason": _finish(r, markers),
                "index": i,
            }
            for i, r in enumerate(results)
        ]
        answers.append(
            {
                "candidates": finals,
                "usageMetadata": _usage(prompt, tokens),
                "modelVersion": model,
                "responseId": response_id,
            }
        )
        return answers

    async def _stream(
        self, request: web.Request, answers: list[dict[str, Any]], markers: Markers
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        out = Streamer(request, resp, markers, STREAM_ERROR_FRAME, self.stats)
        for answer in answers[:-1]:
            if not await out.content(sse(answer)):
                return resp
        if not await out.end_of_content():
            return resp
        await out.frame(sse(answers[-1]))
        return resp


def _usage(prompt: int, output: int) -> dict[str, Any]:
    return {"promptTokenCount": prompt, "candidatesTokenCount": output, "totalTokenCount": prompt + output}


def _part(result: Completion | ToolCall) -> dict[str, Any]:
    if isinstance(result, ToolCall):
        return {"functionCall": {"name": result.name, "args": result.input}}
    return {"text": result.text}


def _finish(result: Completion | ToolCall, markers: Markers) -> str:
    if markers.blocked == "answer":
        return "SAFETY"
    if isinstance(result, Completion) and result.truncated:
        return "MAX_TOKENS"
    return "STOP"


def _pick_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, parameters) of the function to call, or None to answer with text."""
    declarations = [
        d
        for tool in body.get("tools") or ()
        if isinstance(tool, dict)
        for d in tool.get("functionDeclarations") or ()
        if isinstance(d, dict) and isinstance(d.get("name"), str)
    ]
    if not declarations:
        return None
    calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if calling.get("mode") == "NONE":
        return None
    last = body["contents"][-1]
    if any("functionResponse" in p for p in last.get("parts") or () if isinstance(p, dict)):
        return None  # the functions answered: now the model speaks
    allowed = calling.get("allowedFunctionNames")
    for d in declarations:
        if not allowed or d["name"] in allowed:
            return d["name"], d.get("parameters")
    return None
