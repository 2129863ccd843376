"""Bedrock Converse / ConverseStream wire shapes (restJson: camelCase, blobs as base64 strings),
and the pure mappings of its stop reasons, usage and errors to OpenAI's terms.

Only the members the gateway writes or reads are modelled; unknown fields in answers (metrics,
trace, reasoning blocks, the padding `p` of stream events) are ignored when decoding.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.errors import EdgeError
from shared.wire import ErrorDetail, PromptTokensDetails, Usage


class _Wire(msgspec.Struct, omit_defaults=True, rename="camel"):
    pass


# ---- request (and the message blocks answers share) ----------------------------------------


class ImageSource(_Wire):
    bytes: str  # base64 on the JSON wire (a restJson blob)


class Image(_Wire):
    format: str  # png | jpeg | gif | webp
    source: ImageSource


class ToolUse(_Wire):
    tool_use_id: str
    name: str
    input: Any = msgspec.field(default_factory=dict)


class ToolResultContent(_Wire):
    text: str


class ToolResult(_Wire):
    tool_use_id: str
    content: list[ToolResultContent]


class ContentBlock(_Wire):
    text: str | None = None
    image: Image | None = None
    tool_use: ToolUse | None = None
    tool_result: ToolResult | None = None


class Message(_Wire):
    role: str  # user | assistant
    content: list[ContentBlock]


class SystemBlock(_Wire):
    text: str


class InferenceConfig(_Wire):
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop_sequences: list[str] | None = None


class InputSchema(_Wire):
    json: Any


class ToolSpec(_Wire):
    name: str
    input_schema: InputSchema
    description: str | None = None


class Tool(_Wire):
    tool_spec: ToolSpec


class NamedTool(_Wire):
    name: str


class ToolChoice(_Wire):
    auto: dict[str, Any] | None = None
    any: dict[str, Any] | None = None
    tool: NamedTool | None = None


class ToolConfig(_Wire):
    tools: list[Tool]
    tool_choice: ToolChoice | None = None


class ConverseRequest(_Wire):
    messages: list[Message]
    system: list[SystemBlock] | None = None
    inference_config: InferenceConfig | None = None
    tool_config: ToolConfig | None = None
    additional_model_request_fields: dict[str, Any] | None = None


# ---- answers -------------------------------------------------------------------------------


class TokenUsage(_Wire):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_write_input_tokens: int | None = None


class ConverseOutput(_Wire):
    message: Message | None = None


class ConverseResponse(_Wire):
    output: ConverseOutput
    stop_reason: str
    usage: TokenUsage | None = None


class ToolUseDelta(_Wire):
    input: str = ""


class BlockDelta(_Wire):
    text: str | None = None
    tool_use: ToolUseDelta | None = None


class ContentBlockDeltaEvent(_Wire):
    delta: BlockDelta
    content_block_index: int = 0


class ToolUseStart(_Wire):
    tool_use_id: str
    name: str


class BlockStart(_Wire):
    tool_use: ToolUseStart | None = None


class ContentBlockStartEvent(_Wire):
    start: BlockStart
    content_block_index: int = 0


class MessageStopEvent(_Wire):
    stop_reason: str


class MetadataEvent(_Wire):
    usage: TokenUsage | None = None


class ErrorBody(msgspec.Struct):
    message: str | None = None
    Message: str | None = None  # some AWS front ends capitalise it


# ---- mappings ------------------------------------------------------------------------------

_STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
# The model's output could not be read: a failure (502, never cached), not an answer.
_MALFORMED = frozenset({"malformed_model_output", "malformed_tool_use"})


def map_stop_reason(reason: str) -> str:
    """Bedrock stopReason -> OpenAI finish_reason; a reason added later reads as "stop"."""
    if reason in _MALFORMED:
        raise EdgeError(502, f"upstream bedrock: the model's output was malformed ({reason})")
    return _STOP_REASONS.get(reason, "stop")


def map_usage(usage: TokenUsage) -> Usage:
    """Bedrock counts prompt-cache reads and writes apart from inputTokens; OpenAI's prompt_tokens
    includes them (as for Anthropic, whose models report the same way)."""
    read, written = usage.cache_read_input_tokens, usage.cache_write_input_tokens
    prompt = usage.input_tokens + (read or 0) + (written or 0)
    out = Usage(prompt, usage.output_tokens, prompt + usage.output_tokens)
    if read or written:
        out.prompt_tokens_details = PromptTokensDetails(cached_tokens=read or 0, cache_write_tokens=written)
    return out


# Bedrock's exceptions (the x-amzn-ErrorType of an HTTP error; `:exception-type` inside a stream,
# lowerCamelCase there) -> (HTTP status Bedrock gives them, OpenAI type, code). The status decides
# retryability: 408, 429, 5xx are retried on another deployment or after a backoff.
EXCEPTIONS: dict[str, tuple[int, str, str]] = {
    "ValidationException": (400, "invalid_request_error", "validation_error"),
    "AccessDeniedException": (403, "permission_error", "access_denied"),
    "ResourceNotFoundException": (404, "invalid_request_error", "model_not_found"),
    "ModelTimeoutException": (408, "timeout_error", "model_timeout"),
    "ModelErrorException": (424, "server_error", "model_error"),
    "ModelStreamErrorException": (424, "server_error", "model_stream_error"),
    "ThrottlingException": (429, "rate_limit_error", "throttled"),
    "ModelNotReadyException": (429, "server_error", "model_not_ready"),
    "ServiceQuotaExceededException": (400, "insufficient_quota", "service_quota_exceeded"),
    "InternalServerException": (500, "server_error", "internal_server_error"),
    "ServiceUnavailableException": (503, "server_error", "service_unavailable"),
}
_BY_STATUS = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException"}
_BY_STATUS |= {408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException"}
_BY_STATUS |= {500: "InternalServerException", 503: "ServiceUnavailableException"}


def exception_name(name: str) -> str:
    """`throttlingException` (stream) or `ThrottlingException:http://...` (header) -> the name."""
    name = name.split(":", 1)[0].strip()
    return name[:1].upper() + name[1:]


def map_error(status: int, error_type: str, body: bytes) -> tuple[int, ErrorDetail]:
    """A Bedrock error (its type if known, else told by its status) -> (status, OpenAI detail).
    A 424 (the model itself failed) is the upstream's failure: 502 for the client."""
    try:
        parsed = msgspec.json.decode(body, type=ErrorBody)
        message = parsed.message or parsed.Message or ""
    except msgspec.DecodeError:
        message = body[:200].decode("utf-8", "replace").strip()
    name = exception_name(error_type) if error_type else _BY_STATUS.get(status, "")
    status, kind, code = EXCEPTIONS.get(
        name, (status, "server_error" if status >= 500 else "invalid_request_error", name or "")
    )
    if status == 424:
        status = 502
    if code == "validation_error" and "too long" in message.lower():
        code = "context_length_exceeded"  # as OpenAI names it, so context-window fallbacks apply
    text = f"{name}: {message}" if name and message else (message or name or f"upstream answered {status}")
    return status, ErrorDetail(message=text, type=kind, code=code or None)
