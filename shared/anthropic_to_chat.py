"""An Anthropic Messages request: its validation, and its translation to an OpenAI chat request.

The front validates `/v1/messages` bodies with `MessagesCall` (loosely: content blocks stay
JSON, so a block type Anthropic adds tomorrow passes through to an Anthropic upstream), and
estimates their tokens on their chat translation. Workers translate the same way for an
OpenAI-shaped upstream. The mapping is `edge_workers/providers/anthropic_request.py` read
backwards, with the same tables (shared/anthropic_api.py):

- `system` (a string or text blocks) becomes the first message, a system message.
- A user turn's tool_result blocks become tool messages, before the rest of that turn (OpenAI
  wants a tool call's answer right after it); an assistant turn's tool_use blocks become its
  tool_calls, with their input as JSON arguments.
- Images (base64 or URL) become image_url parts (base64 as a data: URL), PDF documents file
  parts, plain-text documents text parts.
- Thinking blocks of earlier assistant turns, `thinking` and `cache_control` are dropped: an
  OpenAI model has nowhere to take them and the answer does not depend on them. What would
  change the answer and cannot be honoured (`top_k`, server tools, images inside tool results,
  other block types) is a 400 naming it (`strict`; the estimate counts such a block as its JSON).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.anthropic_api import OPENAI_TOOL_CHOICE
from shared.errors import EdgeError
from shared.wire import ChatCompletionRequest

_encode = msgspec.json.Encoder().encode


class MessageIn(Struct):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesCall(Struct):
    """What the front checks of a Messages request; every other field rides along as sent."""

    model: Annotated[str, Meta(min_length=1)]
    max_tokens: Annotated[int, Meta(ge=1)]
    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None


class CountTokensCall(Struct):
    """`POST /v1/messages/count_tokens`: a Messages request without max_tokens."""

    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[MessageIn], Meta(min_length=1)]
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None


# Top-level fields an OpenAI model cannot honour, so a translated request refuses them.
_UNSUPPORTED = ("top_k", "mcp_servers", "container")


def to_chat_request(body: dict[str, Any], strict: bool = True) -> dict[str, Any]:
    """A (validated) Messages request -> the OpenAI chat request asking the same. Raises
    EdgeError(400) for what cannot be asked of an OpenAI model; `strict=False` (for estimates)
    skips it instead."""
    if strict:
        for name in _UNSUPPORTED:
            if body.get(name) is not None:
                raise EdgeError(400, f"'{name}' is not supported by this model's provider", param=name)
    messages: list[dict[str, Any]] = []
    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for i, message in enumerate(body.get("messages") or ()):
        if message["role"] == "user":
            messages.extend(_user_messages(message["content"], i, strict))
        else:
            messages.append(_assistant_message(message["content"], i, strict))
    out: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for anthropic, openai in (("temperature", "temperature"), ("top_p", "top_p"), ("stop_sequences", "stop")):
        if body.get(anthropic) is not None:
            out[openai] = body[anthropic]
    if body.get("stream"):
        out["stream"] = True
    user = (body.get("metadata") or {}).get("user_id")
    if isinstance(user, str) and user:
        out["user"] = user
    tools = [_tool(tool, i, strict) for i, tool in enumerate(body.get("tools") or ())]
    tools = [tool for tool in tools if tool is not None]
    if tools:
        out["tools"] = tools
        _tool_choice(body.get("tool_choice"), out)
    return out


def chat_view(body: dict[str, Any]) -> ChatCompletionRequest:
    """The chat request a Messages request amounts to, for the token estimate (never refuses)."""
    try:
        return msgspec.convert(to_chat_request(body, strict=False), ChatCompletionRequest)
    except (msgspec.ValidationError, EdgeError, KeyError, TypeError, AttributeError):
        return ChatCompletionRequest(model=str(body.get("model")), messages=[])


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    return "\n\n".join(b.get("text", "") for b in system or () if b.get("type") == "text")


def _refuse(strict: bool, where: str, why: str) -> None:
    if strict:
        raise EdgeError(400, why, param=where)


def _user_messages(content: str | list[dict[str, Any]], i: int, strict: bool) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        kind = block.get("type")
        if kind == "tool_result":
            results.append(_tool_result(block, where, strict))
        elif kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            part = _image(block.get("source") or {}, where, strict)
            if part is not None:
                parts.append(part)
        elif kind == "document":
            part = _document(block, where, strict)
            if part is not None:
                parts.append(part)
        else:
            _refuse(strict, where, _unsupported_block(kind))
            parts.append({"type": "text", "text": _encode(block).decode()})  # counted as its JSON
    if parts:
        results.append({"role": "user", "content": parts})
    return results


def _unsupported_block(kind: Any) -> str:
    return f"content blocks of type '{kind}' are not supported by this model's provider"


def _data_url(source: dict[str, Any]) -> str:
    return f"data:{source.get('media_type')};base64,{source.get('data')}"


def _image(source: dict[str, Any], where: str, strict: bool) -> dict[str, Any] | None:
    if source.get("type") == "base64":
        return {"type": "image_url", "image_url": {"url": _data_url(source)}}
    if source.get("type") == "url":
        return {"type": "image_url", "image_url": {"url": source.get("url")}}
    _refuse(strict, where, "images must have a base64 or url source for this model's provider")
    return None


def _document(block: dict[str, Any], where: str, strict: bool) -> dict[str, Any] | None:
    source = block.get("source") or {}
    if source.get("type") == "text":
        return {"type": "text", "text": source.get("data", "")}
    if source.get("type") == "base64" and source.get("media_type") == "application/pdf":
        file: dict[str, Any] = {"file_data": _data_url(source)}
        if block.get("title"):
            file["filename"] = block["title"]
        return {"type": "file", "file": file}
    _refuse(strict, where, "documents must be base64 PDF or plain text for this model's provider")
    return None


def _tool_result(block: dict[str, Any], where: str, strict: bool) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") == "text":
                texts.append(part.get("text", ""))
            else:
                _refuse(strict, where, "tool results can hold only text for this model's provider")
        content = "\n\n".join(texts)
    text = content if isinstance(content, str) else ""
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"  # OpenAI's tool message has no error flag
    return {"role": "tool", "tool_call_id": block.get("tool_use_id", ""), "content": text}


def _assistant_message(content: str | list[dict[str, Any]], i: int, strict: bool) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            arguments = _encode(block.get("input") or {}).decode()
            function = {"name": block.get("name", ""), "arguments": arguments}
            calls.append({"id": block.get("id", ""), "type": "function", "function": function})
        elif kind not in ("thinking", "redacted_thinking"):  # the model's own notes: not needed again
            _refuse(strict, f"messages[{i}].content[{j}]", _unsupported_block(kind))
            texts.append(_encode(block).decode())  # counted as its JSON
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool(tool: dict[str, Any], i: int, strict: bool) -> dict[str, Any] | None:
    if tool.get("type") not in (None, "custom"):  # Anthropic's server and client-defined built-ins
        _refuse(strict, f"tools[{i}]", f"tools of type '{tool.get('type')}' run only on Anthropic models")
        return None
    function: dict[str, Any] = {"name": tool.get("name", ""), "parameters": tool.get("input_schema") or {}}
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any] | None, out: dict[str, Any]) -> None:
    if not choice:
        return
    kind = choice.get("type")
    if kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    elif kind in OPENAI_TOOL_CHOICE:
        out["tool_choice"] = OPENAI_TOOL_CHOICE[kind]
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
