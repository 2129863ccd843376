"""Anthropic's Messages API vocabulary and OpenAI's, as tables read in both directions.

The gateway speaks OpenAI's chat completions to clients and upstreams, and Anthropic's Messages
API to both too. Each correspondence between the two (stop reasons, error types, tool choices)
is written once here; the outbound mapping (edge_workers/providers/anthropic*.py: OpenAI client,
Anthropic upstream) and the inbound one (shared/anthropic_to_chat.py, edge_workers/messages.py:
Anthropic client, OpenAI-shaped upstream) both read these tables.
"""

from __future__ import annotations

import msgspec

from shared.wire import ErrorDetail, ErrorEnvelope

# (Anthropic stop_reason, OpenAI finish_reason). Read left to right every row counts; right to
# left the first row naming a finish_reason wins.
STOP_REASONS: tuple[tuple[str, str], ...] = (
    ("end_turn", "stop"),
    ("max_tokens", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),  # a server-tool loop paused; what was said so far is the answer
    ("model_context_window_exceeded", "length"),
    ("tool_use", "function_call"),  # OpenAI's deprecated spelling of a tool call
)
_FINISH_OF = {anthropic: openai for anthropic, openai in reversed(STOP_REASONS)}
_STOP_OF = {openai: anthropic for anthropic, openai in reversed(STOP_REASONS)}

# (Anthropic error type, the status Anthropic answers it with, OpenAI type, OpenAI code).
ERRORS: tuple[tuple[str, int, str, str | None], ...] = (
    ("invalid_request_error", 400, "invalid_request_error", None),
    ("authentication_error", 401, "authentication_error", None),
    ("billing_error", 402, "insufficient_quota", "insufficient_quota"),
    ("permission_error", 403, "permission_error", None),
    ("not_found_error", 404, "invalid_request_error", "not_found"),
    ("request_too_large", 413, "invalid_request_error", "request_too_large"),
    ("rate_limit_error", 429, "rate_limit_error", "rate_limit_exceeded"),
    ("api_error", 500, "server_error", None),
    ("timeout_error", 504, "timeout_error", "request_timeout"),
    ("overloaded_error", 529, "server_error", "overloaded"),
)
ERROR_STATUS = {kind: status for kind, status, _, _ in ERRORS}
_OPENAI_ERROR = {kind: (type_, code) for kind, _, type_, code in ERRORS}
# Statuses Anthropic never answers but the gateway does: the closest type by meaning.
_TYPE_OF_STATUS = {status: kind for kind, status, _, _ in ERRORS} | {
    502: "api_error",
    503: "overloaded_error",  # no live worker, queue unavailable, every deployment refused
}

# (Anthropic tool_choice type, OpenAI tool_choice); {"type": "tool", "name"} is the named choice.
TOOL_CHOICES: tuple[tuple[str, str], ...] = (("auto", "auto"), ("any", "required"), ("none", "none"))
OPENAI_TOOL_CHOICE = dict(TOOL_CHOICES)
ANTHROPIC_TOOL_CHOICE = {openai: anthropic for anthropic, openai in TOOL_CHOICES}

# Request headers an Anthropic client may have forwarded to an Anthropic upstream; every other
# header it sent (its key first) stays at the gateway.
FORWARDED_HEADERS = ("anthropic-version", "anthropic-beta")
ANTHROPIC_VERSION = "2023-06-01"


def map_stop_reason(reason: str | None) -> str | None:
    """Anthropic stop_reason -> OpenAI finish_reason. None stays None (a stream not done yet);
    a reason Anthropic adds later reads as "stop" rather than failing the answer."""
    if reason is None:
        return None
    return _FINISH_OF.get(reason, "stop")


def stop_reason_of(finish_reason: str | None) -> str:
    """OpenAI finish_reason -> Anthropic stop_reason (an unknown one ends the turn)."""
    return _STOP_OF.get(finish_reason or "stop", "end_turn")


def map_error(status: int, error_type: str, message: str) -> ErrorDetail:
    """An Anthropic error -> OpenAI's terms. An unknown type goes by status and keeps its name as code."""
    fallback = ("server_error" if status >= 500 else "invalid_request_error", error_type or None)
    type_, code = _OPENAI_ERROR.get(error_type, fallback)
    return ErrorDetail(message=message or f"upstream answered {status}", type=type_, code=code)


def error_type_of(status: int) -> str:
    """The Anthropic error type a client expects with this status."""
    kind = _TYPE_OF_STATUS.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request_error"
    return kind


class _Error(msgspec.Struct):
    type: str
    message: str


class AnthropicError(msgspec.Struct):
    error: _Error
    type: str = "error"


_decode_openai_error = msgspec.json.Decoder(ErrorEnvelope).decode
_encode = msgspec.json.Encoder().encode


def anthropic_error_body(status: int, openai_body: bytes) -> bytes:
    """The gateway's error (OpenAI's envelope, made by the front or a worker) in Anthropic's
    envelope: the same message, the type Anthropic uses for this status."""
    try:
        message = _decode_openai_error(openai_body).error.message
    except msgspec.DecodeError:
        message = openai_body[:300].decode("utf-8", "replace") or f"HTTP {status}"
    return _encode(AnthropicError(_Error(error_type_of(status), message)))


def event_frame(name: str | bytes, data: bytes) -> bytes:
    """One server-sent event as Anthropic sends them: its name, then its JSON."""
    if isinstance(name, str):
        name = name.encode()
    return b"event: " + name + b"\ndata: " + data + b"\n\n"
