"""Anthropic Messages API wire shapes, as msgspec Structs, plus the small vocabularies (stop
reasons, usage, error types) mapped to OpenAI's terms, shared by the non-streaming adapter and
a stream translator.

Only what the gateway sends or reads is modelled. Request Structs use `omit_defaults=True`
so optional fields left at None never reach the wire (Anthropic rejects some explicit nulls).
Response Structs are deliberately loose: unknown fields are ignored by msgspec, and content
blocks are decoded into one permissive Struct so a block type added by Anthropic tomorrow
(thinking, server tools, ...) is skipped instead of failing the whole answer.
"""

from __future__ import annotations

from typing import Any, Literal

from msgspec import Struct, field

from shared.anthropic_api import map_error, map_stop_reason
from shared.wire import PromptTokensDetails, Usage

__all__ = ["anthropic_usage", "is_response_tool", "map_error", "map_stop_reason", "map_usage"]

# ---- request: content blocks ------------------------------------------------------------


class TextBlockParam(Struct, tag_field="type", tag="text"):
    text: str


class Base64Source(Struct, tag_field="type", tag="base64"):
    media_type: str
    data: str


class URLSource(Struct, tag_field="type", tag="url"):
    url: str


class ImageBlockParam(Struct, tag_field="type", tag="image"):
    source: Base64Source | URLSource


class DocumentBlockParam(Struct, tag_field="type", tag="document", omit_defaults=True):
    source: Base64Source | URLSource
    title: str | None = None


class ToolUseBlockParam(Struct, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlockParam(Struct, tag_field="type", tag="tool_result", omit_defaults=True):
    tool_use_id: str
    # Omitted (not "") when the tool answered nothing: `content` is optional upstream.
    content: str | list[TextBlockParam] | None = None
    is_error: bool | None = None


ContentBlockParam = (
    TextBlockParam | ImageBlockParam | DocumentBlockParam | ToolUseBlockParam | ToolResultBlockParam
)


class MessageParam(Struct):
    role: Literal["user", "assistant"]
    content: list[ContentBlockParam]


# ---- request: tools ---------------------------------------------------------------------


class ToolParam(Struct, omit_defaults=True):
    name: str
    input_schema: dict[str, Any]
    description: str | None = None


class ToolChoiceParam(Struct, omit_defaults=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(Struct, omit_defaults=True):
    user_id: str | None = None


class MessagesRequest(Struct, omit_defaults=True):
    model: str
    messages: list[MessageParam]
    max_tokens: int
    system: str | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Any = None  # passed through from the raw body as the client wrote it
    metadata: Metadata | None = None
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: Any = None  # passed through from the raw body as the client wrote it
    stream: bool | None = None


# ---- response ---------------------------------------------------------------------------


class ContentBlock(Struct):
    """Any response content block. `text` is set for text blocks; `id`, `name`, `input` for
    tool_use blocks. Other block types decode too and are ignored by the translator."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None


class AnthropicUsage(Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class AnthropicMessage(Struct):
    id: str
    model: str
    content: list[ContentBlock]
    usage: AnthropicUsage = field(default_factory=AnthropicUsage)
    type: str = "message"
    role: str = "assistant"
    stop_reason: str | None = None
    stop_sequence: str | None = None


# ---- errors -----------------------------------------------------------------------------


class ErrorObject(Struct):
    type: str
    message: str = ""


class ErrorResponse(Struct):
    error: ErrorObject
    type: str = "error"
    request_id: str | None = None


# ---- vocabularies in OpenAI's terms -------------------------------------------------------
# Stop reasons and error types are tables in shared/anthropic_api.py, read both ways.


def map_usage(usage: AnthropicUsage) -> Usage:
    """Anthropic counts cached prompt tokens apart from `input_tokens`; OpenAI's prompt_tokens
    includes them, so they are added back."""
    read, written = usage.cache_read_input_tokens, usage.cache_creation_input_tokens
    prompt = usage.input_tokens + (read or 0) + (written or 0)
    out = Usage(
        prompt_tokens=prompt, completion_tokens=usage.output_tokens, total_tokens=prompt + usage.output_tokens
    )
    if read is not None or written is not None:
        # Kept apart too (OpenAI's shape): cached reads and writes are billed at their own rates.
        out.prompt_tokens_details = PromptTokensDetails(cached_tokens=read or 0, cache_write_tokens=written)
    return out


def anthropic_usage(usage: Usage | None) -> AnthropicUsage:
    """`map_usage` read backwards: OpenAI's prompt_tokens include the cached ones, Anthropic's
    input_tokens do not."""
    if usage is None:
        return AnthropicUsage()
    details = usage.prompt_tokens_details
    read = written = None
    if isinstance(details, PromptTokensDetails):
        read, written = details.cached_tokens, details.cache_write_tokens
    fresh = max(0, usage.prompt_tokens - (read or 0) - (written or 0))
    return AnthropicUsage(fresh, usage.completion_tokens, written, read)


RESPONSE_TOOL_PREFIX = "response_format__"


def is_response_tool(name: str) -> bool:
    """Whether a tool_use is the structured-output stand-in for `response_format`."""
    return name.startswith(RESPONSE_TOOL_PREFIX)
