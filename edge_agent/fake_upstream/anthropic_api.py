"""The fake Anthropic `POST /v1/messages`, streaming and not."""

from __future__ import annotations

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

# status -> (error type, default message)
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use the specified resource."),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "Internal server error"),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    kind, default = _ERRORS.get(
        status, ("api_error", "Internal server error") if status >= 500 else ("invalid_request_error", "")
    )
    return {"type": "error", "error": {"type": kind, "message": message or default or f"HTTP {status}"}}


def event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + encode(data) + b"\n\n"


STREAM_ERROR_FRAME = event("error", error_body(529))
PING_FRAME = event("ping", {"type": "ping"})
MESSAGE_STOP_FRAME = event("message_stop", {"type": "message_stop"})


def _stop_reason(result: Completion | ToolCall) -> str:
    if isinstance(result, ToolCall):
        return "tool_use"
    if result.stop_sequence is not None:
        return "stop_sequence"
    return "max_tokens" if result.truncated else "end_turn"


def _usage(prompt: int, output: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    }


def pick_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, input schema) of the tool to call, or None to answer with text."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return None
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "none":
        return None
    last = body["messages"][-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list) and all(
        isinstance(block, dict) and block.get("type") == "tool_result" for block in content
    ):
        return None
    named = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)]
    if isinstance(choice, dict) and choice.get("type") == "tool":
        name = choice.get("name")
        for tool in named:
            if tool["name"] == name:
                return tool["name"], tool.get("input_schema")
        return str(name), None
    if not named:
        return None
    return named[0]["name"], named[0].get("input_schema")


class AnthropicApi(BaseApi):
    def check_headers(self, request: web.Request) -> web.Response | None:
        key = request.headers.get("x-api-key", "").strip()
        if not key:  # newer SDKs send the key as a bearer token
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key:
            return self.error(401, "x-api-key header is required")
        required = self.settings.require_key
        if required is not None and key != required:
            return self.error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self.error(400, "anthropic-version: header is required")
        return None

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            return self.error(400, "model: Field required")
        max_tokens = body.get("max_tokens")
        if max_tokens is None:
            return self.error(400, "max_tokens: Field required")
        if not isinstance(max_tokens, int) or max_tokens < 1:
            return self.error(400, "max_tokens: Input should be a valid integer greater than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return self.error(400, "messages: at least one message is required")
        return None

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,  # Anthropic's error envelope has no code
    ) -> web.Response:
        return json_response(error_body(status, message), status, headers)

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        messages = body["messages"]
        system = body.get("system")
        tool = pick_tool(body)
        result: Completion | ToolCall
        if tool is not None:
            result = make_tool_call("toolu_01" + random_id(22), tool[0], tool[1], text)
        else:
            seed = encode([system, messages])
            stops = string_list(body.get("stop_sequences"))
            result = complete(seed, 0, text, markers.words, body["max_tokens"], stops)
        prompt = prompt_tokens(messages, system)
        message_id = "msg_01" + random_id(22)
        if body.get("stream") is True:
            return await self._stream(request, message_id, body["model"], result, prompt, markers)

        block: dict[str, Any]
        if isinstance(result, ToolCall):
            block = {"type": "tool_use", "id": result.id, "name": result.name, "input": result.input}
        else:
            block = {"type": "text", "text": result.text}
        return json_response(
            {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [block],
                "stop_reason": _stop_reason(result),
                "stop_sequence": None if isinstance(result, ToolCall) else result.stop_sequence,
                "usage": _usage(prompt, result.tokens),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        message_id: str,
        model: str,
        result: Completion | ToolCall,
        prompt: int,
        markers: Markers,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        out = Streamer(request, resp, markers, STREAM_ERROR_FRAME, self.stats)
        message: dict[str, Any] = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(prompt, 1),
        }
        await out.frame(event("message_start", {"type": "message_start", "message": message}))
        block: dict[str, Any]
        if isinstance(result, ToolCall):
            block = {"type": "tool_use", "id": result.id, "name": result.name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in result.fragments()]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": piece} for piece in result.pieces()]
        await out.frame(
            event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": block})
        )
        await out.frame(PING_FRAME)
        for delta in deltas:
            frame = event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
            if not await out.content(frame):
                return resp
        if not await out.end_of_content():
            return resp
        await out.frame(event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        stop_sequence = None if isinstance(result, ToolCall) else result.stop_sequence
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": _stop_reason(result), "stop_sequence": stop_sequence},
            "usage": {"output_tokens": result.tokens},
        }
        await out.frame(event("message_delta", message_delta))
        await out.frame(MESSAGE_STOP_FRAME)
        return resp


class AnthropicCountTokensApi(AnthropicApi):
    """`POST /v1/messages/count_tokens`: the prompt's tokens, counted as `/v1/messages` bills them."""

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        return super().validate({"max_tokens": 1, **body})

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        return json_response({"input_tokens": prompt_tokens(body["messages"], body.get("system"))})
