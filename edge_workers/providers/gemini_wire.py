"""Gemini API (`generateContent`) wire shapes, as msgspec Structs (camelCase on the wire).

Only what the gateway sends or reads; unknown fields in answers are ignored. Each request
field is omitted when unset, so a request carries nothing the client did not ask for.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import msgspec
from msgspec import Struct

from shared.errors import EdgeError
from shared.wire import ErrorDetail, PromptTokensDetails, ToolCall, Usage
from shared.wire import FunctionCall as OpenAIFunctionCall

# ---- request ----------------------------------------------------------------------------


class Blob(Struct, rename="camel", omit_defaults=True):
    mime_type: str
    data: str  # base64


class FileData(Struct, rename="camel", omit_defaults=True):
    mime_type: str
    file_uri: str


class FunctionCall(Struct, rename="camel", omit_defaults=True):
    name: str
    args: dict[str, Any] | None = None
    id: str | None = None


class FunctionResponse(Struct, rename="camel", omit_defaults=True):
    name: str
    response: dict[str, Any]
    id: str | None = None


class Part(Struct, rename="camel", omit_defaults=True):
    """Exactly one of the data fields is set. `thought` marks a thinking part of an answer."""

    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class Content(Struct, rename="camel", omit_defaults=True):
    parts: list[Part] = []
    role: str | None = None  # "user" or "model"


class FunctionDeclaration(Struct, rename="camel", omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(Struct, rename="camel", omit_defaults=True):
    function_declarations: list[FunctionDeclaration]


class FunctionCallingConfig(Struct, rename="camel", omit_defaults=True):
    mode: str  # AUTO | ANY | NONE
    allowed_function_names: list[str] | None = None


class ToolConfig(Struct, rename="camel", omit_defaults=True):
    function_calling_config: FunctionCallingConfig


class GenerationConfig(Struct, rename="camel", omit_defaults=True):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    candidate_count: int | None = None
    max_output_tokens: int | None = None
    stop_sequences: list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None


class GenerateContentRequest(Struct, rename="camel", omit_defaults=True):
    contents: list[Content]
    system_instruction: Content | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    generation_config: GenerationConfig | None = None


# ---- answer -----------------------------------------------------------------------------


class Candidate(Struct, rename="camel"):
    content: Content | None = None
    finish_reason: str | None = None
    index: int = 0


class PromptFeedback(Struct, rename="camel"):
    block_reason: str | None = None


class UsageMetadata(Struct, rename="camel"):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    total_token_count: int = 0
    cached_content_token_count: int | None = None
    thoughts_token_count: int = 0
    tool_use_prompt_token_count: int = 0


class GenerateContentResponse(Struct, rename="camel"):
    candidates: list[Candidate] = []
    prompt_feedback: PromptFeedback | None = None
    usage_metadata: UsageMetadata | None = None
    model_version: str | None = None
    response_id: str | None = None


class Status(Struct):
    """google.rpc.Status, as the Gemini API reports errors."""

    message: str = ""
    code: int = 0
    status: str = ""
    details: list[dict[str, Any]] = []


class ErrorResponse(Struct):
    error: Status


# Either shape can arrive where an answer is expected (a stream reports errors inline).
class MaybeError(Struct):
    error: Status | None = None


decode_response = msgspec.json.Decoder(GenerateContentResponse).decode
decode_error = msgspec.json.Decoder(ErrorResponse).decode
decode_maybe_error = msgspec.json.Decoder(MaybeError).decode


# ---- mapping, shared by the answer and the stream -----------------------------------------

_encode = msgspec.json.Encoder().encode
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
)
# google.rpc status -> OpenAI (type, code)
_ERRORS: dict[str, tuple[str, str | None]] = {
    "INVALID_ARGUMENT": ("invalid_request_error", None),
    "FAILED_PRECONDITION": ("invalid_request_error", "failed_precondition"),
    "OUT_OF_RANGE": ("invalid_request_error", None),
    "NOT_FOUND": ("invalid_request_error", "model_not_found"),
    "PERMISSION_DENIED": ("permission_error", None),
    "UNAUTHENTICATED": ("authentication_error", None),
    "RESOURCE_EXHAUSTED": ("rate_limit_error", "rate_limit_exceeded"),
    "INTERNAL": ("server_error", None),
    "UNAVAILABLE": ("server_error", "overloaded"),
    "DEADLINE_EXCEEDED": ("timeout_error", "request_timeout"),
}
_TOO_LONG = re.compile(r"input token count.*exceeds the maximum", re.IGNORECASE | re.DOTALL)


def map_finish_reason(reason: str | None, calls: bool) -> str | None:
    """Gemini finishReason -> OpenAI finish_reason (None: not finished yet)."""
    if reason is None or reason == "FINISH_REASON_UNSPECIFIED":
        return None
    if reason in _FILTERED:
        return "content_filter"
    if reason == "MAX_TOKENS":
        return "length"
    return "tool_calls" if calls else "stop"


def map_usage(meta: UsageMetadata) -> Usage:
    prompt = meta.prompt_token_count + meta.tool_use_prompt_token_count
    completion = meta.candidates_token_count + meta.thoughts_token_count
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    if meta.cached_content_token_count is not None:
        usage.prompt_tokens_details = PromptTokensDetails(cached_tokens=meta.cached_content_token_count)
    return usage


def new_call_id() -> str:
    return "call_" + secrets.token_hex(12)


def blocked_prompt(feedback: PromptFeedback | None) -> EdgeError | None:
    if feedback is None or not feedback.block_reason:
        return None
    message = f"Gemini blocked the prompt ({feedback.block_reason})"
    return EdgeError(400, message, code="content_filter")


# Gemini's thinking models sign each function call they make and want the signature back with
# the call in the next turn (Gemini 3 refuses a call without it). OpenAI's tool call has no field
# for it, so it rides in the call's id, after this separator (as LiteLLM carries it too).
SIGNATURE_SEP = "__thought__"


def tool_call_of(part: Part) -> ToolCall:
    """A functionCall part -> an OpenAI tool call (its thought signature kept in the id)."""
    call = part.function_call
    assert call is not None
    arguments = _encode(call.args if call.args is not None else {}).decode()
    call_id = call.id or new_call_id()
    if part.thought_signature:
        call_id += SIGNATURE_SEP + part.thought_signature
    return ToolCall(id=call_id, function=OpenAIFunctionCall(name=call.name, arguments=arguments))


def signature_of(call_id: str) -> str | None:
    """The thought signature a tool call id carries, if any."""
    _, sep, signature = call_id.partition(SIGNATURE_SEP)
    return signature if sep and signature else None


def map_error(status: int, error: Status) -> ErrorDetail:
    type_, code = _ERRORS.get(
        error.status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    if error.status == "INVALID_ARGUMENT" and _TOO_LONG.search(error.message):
        code = "context_length_exceeded"
    return ErrorDetail(message=error.message or f"upstream answered {status}", type=type_, code=code)
