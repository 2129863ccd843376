"""The fake Bedrock runtime: `POST /model/{modelId}/converse` and `/converse-stream`.

Requests must carry a valid SigV4 signature made with the fake's test credentials (`aws.py`)
and a body botocore's own model of the Converse API accepts (its parameter validator, the one
boto3 runs before sending). Errors come as Bedrock sends them: a JSON `message` and the
exception's name in `x-amzn-ErrorType`; `[[fake:error_code=ModelNotReadyException]]` picks the
exception of a `status` marker. Streams are AWS event streams (`aws.frame`).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import functools
import uuid
from typing import Any

from aiohttp import web
from botocore.model import Shape
from botocore.session import get_session
from botocore.validate import ParamValidator

from edge_agent.fake_upstream import aws
from edge_agent.fake_upstream.common import BaseApi, Streamer, json_response
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
    text_of,
)

EVENT_STREAM = "application/vnd.amazon.eventstream"
_ERROR_NAMESPACE = ":http://internal.amazon.com/coral/com.amazon.bedrock/"
_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_MESSAGES = {
    "ValidationException": "The provided request is not valid.",
    "AccessDeniedException": "You don't have access to the model with the specified model ID.",
    "ResourceNotFoundException": "The provided model identifier is invalid.",
    "ModelTimeoutException": "The model took too long to respond.",
    "ModelErrorException": "The model failed to process the request.",
    "ThrottlingException": "Too many requests, please wait before trying again.",
    "ModelNotReadyException": "The model is not ready to serve inference requests.",
    "InternalServerException": "An internal server error occurred.",
    "ServiceUnavailableException": "The service is temporarily unable to handle the request.",
}
STREAM_ERROR_FRAME = aws.exception(
    "modelStreamErrorException",
    encode({"message": "The model stream failed.", "originalStatusCode": 500, "originalMessage": "boom"}),
)


@functools.cache
def _converse_shape() -> Shape:
    """botocore's input shape of Converse (loaded once: the service model is a large file)."""
    return get_session().get_service_model("bedrock-runtime").operation_model("Converse").input_shape


def _with_blobs(body: dict[str, Any]) -> dict[str, Any]:
    """The JSON body as boto3 parameters: base64 image bytes back to bytes. Raises ValueError."""
    for message in body.get("messages") or []:
        for block in message.get("content") or [] if isinstance(message, dict) else []:
            source = (block.get("image") or {}).get("source") if isinstance(block, dict) else None
            if isinstance(source, dict) and isinstance(source.get("bytes"), str):
                source["bytes"] = base64.b64decode(source["bytes"], validate=True)
    return body


def _stop_reason(result: Completion | ToolCall) -> str:
    if isinstance(result, ToolCall):
        return "tool_use"
    if result.stop_sequence is not None:
        return "stop_sequence"
    return "max_tokens" if result.truncated else "end_turn"


def _usage(prompt: int, output: int) -> dict[str, int]:
    return {"inputTokens": prompt, "outputTokens": output, "totalTokens": prompt + output}


def pick_tool(body: dict[str, Any]) -> tuple[str, Any] | None:
    """(name, input schema) of the tool to call, or None to answer with text."""
    config = body.get("toolConfig") or {}
    specs = [t["toolSpec"] for t in config.get("tools") or [] if isinstance(t, dict) and "toolSpec" in t]
    last = body["messages"][-1]
    content = last.get("content") or []
    if not specs or last.get("role") != "user" or all("toolResult" in block for block in content):
        return None
    chosen = (config.get("toolChoice") or {}).get("tool")
    if isinstance(chosen, dict):
        for spec in specs:
            if spec["name"] == chosen.get("name"):
                return spec["name"], spec["inputSchema"].get("json")
    return specs[0]["name"], specs[0]["inputSchema"].get("json")


class BedrockApi(BaseApi):
    def check_headers(self, request: web.Request) -> web.Response | None:
        return None  # the signature covers the body: checked in check_signed

    def check_signed(self, request: web.Request, raw: bytes) -> web.Response | None:
        if not self.settings.aws_checks:
            return None
        url = f"{request.scheme}://{request.host}{request.raw_path}"
        now = datetime.datetime.now(datetime.UTC)
        problem = aws.signature_problem(request.method, url, request.headers, raw, now)
        if problem is None:
            return None
        name = "UnrecognizedClientException" if "security token" in problem else "InvalidSignatureException"
        if problem.startswith("Missing"):
            name = "MissingAuthenticationTokenException"
        return self.error(403, problem, code=name)

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        return request.match_info["model"]

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        if not isinstance(body.get("messages"), list):
            return self.error(400, "messages: a list is required")
        if not self.settings.aws_checks:
            return (
                None
                if body["messages"]
                else self.error(400, "A conversation must start with a user message.")
            )
        params = dict(body, modelId="model")
        try:
            report = ParamValidator().validate(_with_blobs(params), _converse_shape())
        except (binascii.Error, ValueError):
            return self.error(400, "Invalid base64 in an image's bytes")
        if report.has_errors():
            return self.error(400, " ".join(report.generate_report().split()))
        if not body["messages"]:
            return self.error(400, "A conversation must start with a user message.")
        return None

    def marker_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body["messages"]):
            if message.get("role") == "user":
                return text_of(
                    [{"type": "text", "text": b["text"]} for b in message["content"] if "text" in b]
                )
        return ""

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> web.Response:
        name = (
            code
            if code and code.endswith("Exception")
            else _EXCEPTIONS.get(status, "InternalServerException")
        )
        out = {"x-amzn-ErrorType": name + _ERROR_NAMESPACE, "x-amzn-RequestId": str(uuid.uuid4())}
        return json_response(
            {"message": message or _MESSAGES.get(name, name)}, status, {**out, **(headers or {})}
        )

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        messages, system = body["messages"], body.get("system")
        config = body.get("inferenceConfig") or {}
        tool = pick_tool(body)
        result: Completion | ToolCall
        if tool is not None:
            result = make_tool_call("tooluse_" + random_id(22), tool[0], tool[1], text)
        else:
            seed = encode([system, messages])
            stops = string_list(config.get("stopSequences"))
            result = complete(seed, 0, text, markers.words, config.get("maxTokens"), stops)
        prompt = prompt_tokens(messages, system)
        if request.path.endswith("/converse-stream"):
            return await self._stream(request, result, prompt, markers)
        block: dict[str, Any]
        if isinstance(result, ToolCall):
            block = {"toolUse": {"toolUseId": result.id, "name": result.name, "input": result.input}}
        else:
            block = {"text": result.text}
        answer = {
            "output": {"message": {"role": "assistant", "content": [block]}},
            "stopReason": _stop_reason(result),
            "usage": _usage(prompt, result.tokens),
            "metrics": {"latencyMs": 1},
        }
        return json_response(answer, headers={"x-amzn-RequestId": str(uuid.uuid4())})

    async def _stream(
        self, request: web.Request, result: Completion | ToolCall, prompt: int, markers: Markers
    ) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": EVENT_STREAM, "x-amzn-RequestId": str(uuid.uuid4())}
        )
        await resp.prepare(request)
        out = Streamer(request, resp, markers, STREAM_ERROR_FRAME, self.stats)
        deltas: list[dict[str, Any]]
        pad = random_id(8)  # Bedrock pads events with a `p` field: readers must ignore it
        await out.frame(aws.event("messageStart", encode({"role": "assistant", "p": pad})))
        if isinstance(result, ToolCall):
            start = {"toolUse": {"toolUseId": result.id, "name": result.name}}
            await out.frame(aws.event("contentBlockStart", encode({"contentBlockIndex": 0, "start": start})))
            deltas = [{"toolUse": {"input": part}} for part in result.fragments()]
        else:
            deltas = [{"text": piece} for piece in result.pieces()]
        for delta in deltas:
            payload = encode({"contentBlockIndex": 0, "delta": delta, "p": pad})
            if not await out.content(aws.event("contentBlockDelta", payload)):
                return resp
        if not await out.end_of_content():
            return resp
        await out.frame(aws.event("contentBlockStop", encode({"contentBlockIndex": 0})))
        await out.frame(aws.event("messageStop", encode({"stopReason": _stop_reason(result)})))
        metadata = {"usage": _usage(prompt, result.tokens), "metrics": {"latencyMs": 1}}
        await out.frame(aws.event("metadata", encode(metadata)))
        return resp
