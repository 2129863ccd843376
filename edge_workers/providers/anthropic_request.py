"""OpenAI chat request -> Anthropic Messages request (see `anthropic` for the mapping rules)."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from edge_workers.providers import anthropic_wire as aw
from edge_workers.providers.anthropic_wire import (
    RESPONSE_TOOL_PREFIX,
    is_response_tool,
)
from shared.anthropic_api import ANTHROPIC_TOOL_CHOICE
from shared.errors import EdgeError
from shared.wire import (
    AssistantMessage,
    ChatCompletionRequest,
    DeveloperMessage,
    FilePart,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    Message,
    NamedToolChoice,
    ResponseFormat,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    UserPart,
    validation_error_param,
)

DEFAULT_MAX_TOKENS = 4096
_RESPONSE_TOOL_DESCRIPTION = "Give your final answer by calling this tool; its input is the whole answer."
_IMAGE_TYPES = ("image/gif", "image/jpeg", "image/png", "image/webp")
_NOT_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")

_encode = msgspec.json.Encoder().encode
_decode_json = msgspec.json.Decoder().decode
_decode_message = msgspec.json.Decoder(aw.AnthropicMessage).decode
_decode_error = msgspec.json.Decoder(aw.ErrorResponse).decode


def _unsupported(param: str, why: str) -> EdgeError:
    return EdgeError(400, why, param=param)


# ---- request ----------------------------------------------------------------------------


def to_messages_request(body: dict[str, Any], upstream_model: str) -> aw.MessagesRequest:
    """The client's decoded chat request -> an Anthropic Messages request (`stream` unset)."""
    try:
        req = msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as e:
        message, param = validation_error_param(e)
        raise EdgeError(400, message, param=param) from None
    _reject_unsupported(req, body)
    system, messages = _convert_messages(req.messages)
    tools = _convert_tools(req)
    response_tool = _response_tool(req.response_format)
    tool_choice = _tool_choice(req, bool(tools), response_tool.name if response_tool else None)
    if response_tool is not None:
        tools.append(response_tool)
    thinking = body.get("thinking")
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    return aw.MessagesRequest(
        model=upstream_model,
        messages=messages,
        max_tokens=req.max_completion_tokens or req.max_tokens or _default_max_tokens(thinking),
        system=system,
        stop_sequences=stop or None,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=body.get("top_k"),
        metadata=aw.Metadata(user_id=req.user) if req.user else None,
        tools=tools or None,
        tool_choice=tool_choice,
        thinking=thinking,
    )


def _default_max_tokens(thinking: Any) -> int:
    budget = thinking.get("budget_tokens") if isinstance(thinking, dict) else None
    return DEFAULT_MAX_TOKENS + budget if isinstance(budget, int) else DEFAULT_MAX_TOKENS


def _reject_unsupported(req: ChatCompletionRequest, body: dict[str, Any]) -> None:
    if (req.n or 1) > 1:
        raise _unsupported("n", "Anthropic models return one choice per request; n must be 1")
    if req.logprobs or req.top_logprobs:
        raise _unsupported(
            "logprobs" if req.logprobs else "top_logprobs", "Anthropic models return no logprobs"
        )
    for name, value in (
        ("presence_penalty", req.presence_penalty),
        ("frequency_penalty", req.frequency_penalty),
    ):
        if value:
            raise _unsupported(name, f"Anthropic models do not support {name}")
    if req.logit_bias:
        raise _unsupported("logit_bias", "Anthropic models do not support logit_bias")
    if req.temperature is not None and req.temperature > 1:
        why = f"Anthropic models take a temperature between 0 and 1, got {req.temperature}"
        raise _unsupported("temperature", why)
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _unsupported(
                legacy, f"the deprecated '{legacy}' is not supported; use tools and tool_choice"
            )


def _convert_messages(messages: list[Message]) -> tuple[str | None, list[aw.MessageParam]]:
    system: list[str] = []
    turns: list[aw.MessageParam] = []
    for i, m in enumerate(messages):
        if isinstance(m, SystemMessage | DeveloperMessage):
            system.extend(t for t in _texts(m.content) if t.strip())
            continue
        if isinstance(m, UserMessage):
            turn = aw.MessageParam(role="user", content=_user_blocks(m.content, i))
        elif isinstance(m, AssistantMessage):
            turn = aw.MessageParam(role="assistant", content=_assistant_blocks(m, i))
        elif isinstance(m, ToolMessage):
            turn = aw.MessageParam(role="user", content=[_tool_result(m)])
        else:
            why = "the deprecated 'function' role is not supported; use tool messages"
            raise _unsupported(f"messages[{i}].role", why)
        if not turn.content:
            continue
        if turns and turns[-1].role == turn.role:
            turns[-1].content.extend(turn.content)
        else:
            turns.append(turn)
    if not turns:
        raise EdgeError(
            400, "Anthropic needs at least one non-empty user or assistant message", param="messages"
        )
    for turn in turns:
        if turn.role == "user":
            # Stable sort: tool results first, everything else keeps its order.
            turn.content.sort(key=lambda b: not isinstance(b, aw.ToolResultBlockParam))
    last = turns[-1].content[-1]
    if turns[-1].role == "assistant" and isinstance(last, aw.TextBlockParam):
        last.text = last.text.rstrip()
    return ("\n\n".join(system) or None), turns


def _texts(content: str | list[TextPart]) -> list[str]:
    return [content] if isinstance(content, str) else [p.text for p in content]


def _user_blocks(content: str | list[UserPart], i: int) -> list[aw.ContentBlockParam]:
    if isinstance(content, str):
        return [aw.TextBlockParam(text=content)] if content.strip() else []
    blocks: list[aw.ContentBlockParam] = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text.strip():
                blocks.append(aw.TextBlockParam(text=part.text))
        elif isinstance(part, ImagePart):
            blocks.append(aw.ImageBlockParam(source=_image_source(part.image_url.url, where)))
        elif isinstance(part, FilePart):
            blocks.append(_document(part, where))
        else:
            raise _unsupported(where, "Anthropic models cannot take input_audio parts via this gateway")
    return blocks


def parse_data_url(url: str, where: str) -> tuple[str, str]:
    """`data:<media type>[;params];base64,<data>` -> (media type, base64 data)."""
    header, comma, data = url.removeprefix("data:").partition(",")
    media, *params = header.split(";")
    if not comma or "base64" not in params or not data:
        raise EdgeError(400, "data: URLs must be base64-encoded ('data:<type>;base64,<data>')", param=where)
    return media.strip().lower(), data


def _image_source(url: str, where: str) -> aw.Base64Source | aw.URLSource:
    if url.startswith("data:"):
        media, data = parse_data_url(url, where)
        if media not in _IMAGE_TYPES:
            raise _unsupported(where, f"Anthropic accepts images as {', '.join(_IMAGE_TYPES)}; got {media}")
        return aw.Base64Source(media_type=media, data=data)
    if url.startswith(("http://", "https://")):
        return aw.URLSource(url=url)
    raise EdgeError(400, "image_url.url must be an http(s) URL or a base64 data: URL", param=where)


def _document(part: FilePart, where: str) -> aw.DocumentBlockParam:
    data = part.file.file_data
    if data and data.startswith("data:"):
        media, b64 = parse_data_url(data, where)
        if media == "application/pdf":
            source = aw.Base64Source(media_type=media, data=b64)
            return aw.DocumentBlockParam(source=source, title=part.file.filename)
    why = (
        "Anthropic models take file parts via this gateway only as PDF file_data "
        "('data:application/pdf;base64,...'); file_id and other file types are not supported"
    )
    raise _unsupported(where, why)


def _assistant_blocks(m: AssistantMessage, i: int) -> list[aw.ContentBlockParam]:
    if m.function_call is not None:
        why = "the deprecated function_call is not supported; use tool_calls"
        raise _unsupported(f"messages[{i}].function_call", why)
    if isinstance(m.content, str):
        texts = [m.content]
    else:  # refusal parts replay the model's own earlier refusal: nothing to send
        texts = [p.text for p in m.content or [] if isinstance(p, TextPart)]
    blocks: list[aw.ContentBlockParam] = [aw.TextBlockParam(text=t) for t in texts if t.strip()]
    for k, call in enumerate(m.tool_calls or []):
        arguments = tool_arguments(
            call.function.arguments, f"messages[{i}].tool_calls[{k}].function.arguments"
        )
        blocks.append(aw.ToolUseBlockParam(id=_tool_id(call.id), name=call.function.name, input=arguments))
    return blocks


def _tool_id(call_id: str) -> str:
    return _NOT_ID_CHARS.sub("_", call_id)


def tool_arguments(raw: str, where: str) -> dict[str, Any]:
    if not raw.strip():  # some clients send "" for a call without arguments
        return {}
    try:
        value = _decode_json(raw)
    except msgspec.DecodeError:
        raise EdgeError(400, "tool call arguments are not valid JSON", param=where) from None
    if not isinstance(value, dict):
        raise EdgeError(400, "tool call arguments must be a JSON object", param=where)
    return value


def _tool_result(m: ToolMessage) -> aw.ToolResultBlockParam:
    content: str | list[aw.TextBlockParam] | None
    if isinstance(m.content, str):
        content = m.content or None
    else:
        content = [aw.TextBlockParam(text=p.text) for p in m.content if p.text.strip()] or None
    return aw.ToolResultBlockParam(tool_use_id=_tool_id(m.tool_call_id), content=content)


def _convert_tools(req: ChatCompletionRequest) -> list[aw.ToolParam]:
    tools = []
    for i, tool in enumerate(req.tools or []):
        fn = tool.function
        if is_response_tool(fn.name):
            why = f"tool names starting with '{RESPONSE_TOOL_PREFIX}' are reserved by this gateway"
            raise _unsupported(f"tools[{i}].function.name", why)
        schema = fn.parameters or {"type": "object", "properties": {}}
        tools.append(aw.ToolParam(name=fn.name, description=fn.description, input_schema=schema))
    return tools


def _response_tool(fmt: ResponseFormat | None) -> aw.ToolParam | None:
    if isinstance(fmt, JsonSchemaFormat):
        spec = fmt.json_schema
        name = (RESPONSE_TOOL_PREFIX + _NOT_ID_CHARS.sub("_", spec.name))[:64]
        description = _RESPONSE_TOOL_DESCRIPTION + (f" {spec.description}" if spec.description else "")
        return aw.ToolParam(
            name=name, description=description, input_schema=spec.schema or {"type": "object"}
        )
    if isinstance(fmt, JsonObjectFormat):
        name = RESPONSE_TOOL_PREFIX + "json_object"
        return aw.ToolParam(
            name=name, description=_RESPONSE_TOOL_DESCRIPTION, input_schema={"type": "object"}
        )
    return None


def _tool_choice(
    req: ChatCompletionRequest, has_tools: bool, response_tool: str | None
) -> aw.ToolChoiceParam | None:
    single = True if req.parallel_tool_calls is False else None
    choice = req.tool_choice
    if not has_tools and response_tool is None:
        return None  # a tool_choice without tools is a 400 upstream, for no benefit
    if isinstance(choice, NamedToolChoice):
        return aw.ToolChoiceParam(type="tool", name=choice.function.name, disable_parallel_tool_use=single)
    if response_tool is not None:
        if has_tools and choice != "none":
            # The model may call the client's tools or answer through the response tool.
            return aw.ToolChoiceParam(type="any", disable_parallel_tool_use=single)
        return aw.ToolChoiceParam(type="tool", name=response_tool, disable_parallel_tool_use=single)
    if choice == "none":
        return aw.ToolChoiceParam(type="none")
    if choice is not None or single:
        kind = ANTHROPIC_TOOL_CHOICE[choice or "auto"]  # "required" is Anthropic's "any"
        return aw.ToolChoiceParam(type=kind, disable_parallel_tool_use=single)  # type: ignore[arg-type]
    return None


# ---- response ---------------------------------------------------------------------------
