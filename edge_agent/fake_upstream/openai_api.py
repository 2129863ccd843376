"""The fake OpenAI `POST /v1/chat/completions`, streaming and not."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from edge_agent.fake_upstream.common import SSE_HEADERS, BaseApi, Streamer, json_response
from edge_agent.fake_upstream.content import (
    Completion,
    Markers,
    ToolCall,
    complete,
    encode,
    make_tool_call,
    prompt_tokens,
    random_id,
    string_list,
)
from edge_agent.fake_upstream.openai_options import choice_logprobs, structured, top_logprobs

FINGERPRINT = "fp_f4e3d2c1b0"

# status -> (type, code, default message)
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Permission denied."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again in 1s."),
    500: ("server_error", None, "The server had an error while processing your request. Sorry about that!"),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def error_body(
    status: int, message: str | None = None, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind, default_code, default = _ERRORS.get(
        status,
        ("server_error", None, "The server had an error while processing your request.")
        if status >= 500
        else ("invalid_request_error", None, "Invalid request."),
    )
    code = code or default_code
    return {"error": {"message": message or default, "type": kind, "param": param, "code": code}}


STREAM_ERROR_FRAME = b"data: " + encode(error_body(500)) + b"\n\n"


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(result: Completion | ToolCall) -> str:
    if isinstance(result, ToolCall):
        return "tool_calls"
    return "length" if result.truncated else "stop"


def _tool_call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def pick_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, parameters schema) of the tool to call, or None to answer with text."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        return None
    messages = body["messages"]
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    functions = [t["function"] for t in tools if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        for function in functions:
            if function.get("name") == name:
                return str(name), function.get("parameters")
        return str(name), None
    if not functions:
        return None
    return str(functions[0].get("name", "tool")), functions[0].get("parameters")


class OpenAIApi(BaseApi):
    retry_after_ms_header = True
    stream_preamble = b""  # written before the first chunk (Azure's prompt_filter_results)

    def check_headers(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key:
            return self.error(
                401,
                "You didn't provide an API key. You need to provide your API key in an Authorization "
                "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        required = self.settings.require_key
        if required is not None and key != required:
            return self.error(401, f"Incorrect API key provided: {key[:3]}***{key[-4:]}.")
        return None

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "'messages' must be a non-empty array.", param="messages")
        n = body.get("n")
        if n is not None and (not isinstance(n, int) or not 1 <= n <= 128):
            return self.error(400, f"{n!r} is not a valid value for 'n'.", param="n")
        return None

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> web.Response:
        return json_response(error_body(status, message, param, code), status, headers)

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        messages = body["messages"]
        n = body.get("n") or 1
        limit = body.get("max_completion_tokens")
        if not isinstance(limit, int):
            limit = body.get("max_tokens")
        if not isinstance(limit, int):
            limit = None
        tool = pick_tool(body)
        document = structured(body, text) if tool is None else None
        results: list[Completion | ToolCall] = []
        if tool is not None:
            results = [make_tool_call("call_" + random_id(24), tool[0], tool[1], text) for _ in range(n)]
        elif document is not None:
            results = [document] * n
        else:
            seed = encode(messages)
            stops = string_list(body.get("stop"))
            results = [complete(seed, i, text, markers.words, limit, stops) for i in range(n)]
        prompt = prompt_tokens(messages)
        top = top_logprobs(body)
        if body.get("stream") is True:
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return await self._stream(request, body["model"], results, prompt, include_usage, markers, top)

        choices = []
        completion_tokens = 0
        for i, result in enumerate(results):
            message: dict[str, Any]
            if isinstance(result, ToolCall):
                message = {
                    "role": "assistant",
                    "content": None,
                    "refusal": None,
                    "tool_calls": [_tool_call_json(result)],
                }
            else:
                message = {"role": "assistant", "content": result.text, "refusal": None}
            completion_tokens += result.tokens
            logprobs = None
            if top is not None and isinstance(result, Completion):
                logprobs = choice_logprobs(result.pieces(), top)
            choices.append(
                {
                    "index": i,
                    "message": message,
                    "logprobs": logprobs,
                    "finish_reason": _finish_reason(result),
                }
            )
        answer = {
            "id": "chatcmpl-" + random_id(24),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": choices,
            "usage": _usage(prompt, completion_tokens),
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }
        if markers.no_usage:
            del answer["usage"]
        return json_response(answer)

    async def _stream(
        self,
        request: web.Request,
        model: str,
        results: list[Completion | ToolCall],
        prompt: int,
        include_usage: bool,
        markers: Markers,
        top: int | None,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        head = {
            "id": "chatcmpl-" + random_id(24),
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
        }

        def chunk(
            index: int,
            delta: dict[str, Any],
            finish_reason: str | None = None,
            logprobs: dict[str, Any] | None = None,
        ) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
            obj: dict[str, Any] = {**head, "choices": [choice]}
            if include_usage:
                obj["usage"] = None
            return b"data: " + encode(obj) + b"\n\n"

        out = Streamer(request, resp, markers, STREAM_ERROR_FRAME, self.stats)
        if self.stream_preamble:
            await out.frame(self.stream_preamble)
        completion_tokens = 0
        last = len(results) - 1
        for i, result in enumerate(results):
            if isinstance(result, ToolCall):
                function = {"name": result.name, "arguments": ""}
                opening = {"index": 0, "id": result.id, "type": "function", "function": function}
                await out.frame(
                    chunk(i, {"role": "assistant", "content": None, "tool_calls": [opening], "refusal": None})
                )
                for fragment in result.fragments():
                    delta = {"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}
                    if not await out.content(chunk(i, delta)):
                        return resp
            else:
                await out.frame(chunk(i, {"role": "assistant", "content": "", "refusal": None}))
                for piece in result.pieces():
                    logprobs = None if top is None else choice_logprobs([piece], top)
                    if not await out.content(chunk(i, {"content": piece}, logprobs=logprobs)):
                        return resp
            if i == last and not await out.end_of_content():
                return resp
            completion_tokens += result.tokens
            await out.frame(chunk(i, {}, _finish_reason(result)))
        if include_usage:
            usage_chunk = {**head, "choices": [], "usage": _usage(prompt, completion_tokens)}
            await out.frame(b"data: " + encode(usage_chunk) + b"\n\n")
        await out.frame(b"data: [DONE]\n\n")
        return resp
