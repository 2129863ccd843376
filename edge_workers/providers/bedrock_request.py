"""OpenAI chat request -> Bedrock Converse request (see `bedrock` for the mapping rules)."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import msgspec

from edge_workers.providers import bedrock_wire as bw
from edge_workers.providers.anthropic_request import (
    _response_tool,
    _tool_id,
    _unsupported,
    parse_data_url,
    tool_arguments,
)
from edge_workers.providers.anthropic_wire import RESPONSE_TOOL_PREFIX, is_response_tool
from edge_workers.providers.turns import fold_turns
from shared.errors import EdgeError
from shared.wire import (
    AssistantMessage,
    ChatCompletionRequest,
    ImagePart,
    Message,
    NamedToolChoice,
    TextPart,
    ToolMessage,
    UserMessage,
    UserPart,
    validation_error_param,
)

# Converse's image formats, by the media type of a data: URL.
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg", "image/gif": "gif"}
_IMAGE_FORMATS["image/webp"] = "webp"


def to_converse_request(body: dict[str, Any]) -> bw.ConverseRequest:
    """The client's decoded chat request -> a Converse request (the model goes in the URL)."""
    try:
        req = msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as e:
        message, param = validation_error_param(e)
        raise EdgeError(400, message, param=param) from None
    _reject_unsupported(req, body)
    system, messages = _convert_messages(req.messages)
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    config = bw.InferenceConfig(
        max_tokens=req.max_completion_tokens or req.max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        stop_sequences=stop or None,
    )
    top_k = body.get("top_k")  # model-specific: Bedrock takes it as an additional field
    return bw.ConverseRequest(
        messages=messages,
        system=[bw.SystemBlock(text=t) for t in system] or None,
        inference_config=config if config != bw.InferenceConfig() else None,
        tool_config=_tool_config(req, messages),
        additional_model_request_fields={"top_k": top_k} if isinstance(top_k, int) else None,
    )


def _reject_unsupported(req: ChatCompletionRequest, body: dict[str, Any]) -> None:
    if (req.n or 1) > 1:
        raise _unsupported("n", "Bedrock returns one choice per request; n must be 1")
    if req.logprobs or req.top_logprobs:
        raise _unsupported("logprobs" if req.logprobs else "top_logprobs", "Bedrock returns no logprobs")
    for name in ("presence_penalty", "frequency_penalty", "logit_bias"):
        if getattr(req, name):
            raise _unsupported(name, f"Bedrock's Converse API does not take {name}")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _unsupported(
                legacy, f"the deprecated '{legacy}' is not supported; use tools and tool_choice"
            )


def _convert_messages(messages: list[Message]) -> tuple[list[str], list[bw.Message]]:
    system, turns = fold_turns(messages, _turn, "Bedrock")
    last = turns[-1].content[-1]
    if turns[-1].role == "assistant" and last.text is not None:
        last.text = last.text.rstrip()  # a prefill must not end in whitespace
    return system, turns


def _turn(i: int, m: UserMessage | AssistantMessage | ToolMessage) -> bw.Message:
    if isinstance(m, UserMessage):
        return bw.Message(role="user", content=_user_blocks(m.content, i))
    if isinstance(m, AssistantMessage):
        return bw.Message(role="assistant", content=_assistant_blocks(m, i))
    text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
    result = bw.ToolResult(_tool_id(m.tool_call_id), [bw.ToolResultContent(text or " ")])
    return bw.Message(role="user", content=[bw.ContentBlock(tool_result=result)])


def _user_blocks(content: str | list[UserPart], i: int) -> list[bw.ContentBlock]:
    if isinstance(content, str):
        return [bw.ContentBlock(text=content)] if content.strip() else []
    blocks: list[bw.ContentBlock] = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text.strip():
                blocks.append(bw.ContentBlock(text=part.text))
        elif isinstance(part, ImagePart):
            blocks.append(bw.ContentBlock(image=_image(part.image_url.url, where)))
        else:
            raise _unsupported(where, "Bedrock models take text and image parts via this gateway")
    return blocks


def _image(url: str, where: str) -> bw.Image:
    """A base64 data: URL -> Converse's image block. Bedrock fetches no URL, and the gateway
    fetches none for it (clients never make it reach a host)."""
    if not url.startswith("data:"):
        why = "Bedrock takes images as base64 data: URLs ('data:image/png;base64,...'), not links"
        raise EdgeError(400, why, param=where)
    media, data = parse_data_url(url, where)
    image_format = _IMAGE_FORMATS.get(media)
    if image_format is None:
        raise _unsupported(where, f"Bedrock accepts images as png, jpeg, gif or webp; got {media}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise EdgeError(400, "the image's base64 data is not valid", param=where) from None
    # The bytes travel base64-encoded again (a restJson blob), re-encoded from the decoded bytes
    # so that what is sent is canonical whatever padding or line breaks the client used.
    return bw.Image(format=image_format, source=bw.ImageSource(bytes=base64.b64encode(raw).decode()))


def _assistant_blocks(m: AssistantMessage, i: int) -> list[bw.ContentBlock]:
    if m.function_call is not None:
        raise _unsupported(f"messages[{i}].function_call", "the deprecated function_call is not supported")
    texts = (
        [m.content]
        if isinstance(m.content, str)
        else [p.text for p in m.content or [] if isinstance(p, TextPart)]
    )
    blocks = [bw.ContentBlock(text=t) for t in texts if t.strip()]
    for k, call in enumerate(m.tool_calls or []):
        arguments = tool_arguments(
            call.function.arguments, f"messages[{i}].tool_calls[{k}].function.arguments"
        )
        use = bw.ToolUse(tool_use_id=_tool_id(call.id), name=call.function.name, input=arguments)
        blocks.append(bw.ContentBlock(tool_use=use))
    return blocks


def _has_tool_blocks(messages: list[bw.Message]) -> bool:
    return any(b.tool_use is not None or b.tool_result is not None for m in messages for b in m.content)


def _tool_config(req: ChatCompletionRequest, messages: list[bw.Message]) -> bw.ToolConfig | None:
    """Tools and tool_choice. Converse has no "none": without tool turns in the history the tools
    are left out; with them Bedrock wants the tools declared, so they stay, on "auto".
    `response_format` becomes a forced tool, as for Anthropic (see `anthropic.py`)."""
    tools: list[bw.Tool] = []
    for i, tool in enumerate(req.tools or []):
        fn = tool.function
        if is_response_tool(fn.name):
            why = f"tool names starting with '{RESPONSE_TOOL_PREFIX}' are reserved by this gateway"
            raise _unsupported(f"tools[{i}].function.name", why)
        schema = fn.parameters or {"type": "object", "properties": {}}
        spec = bw.ToolSpec(
            name=fn.name, input_schema=bw.InputSchema(schema), description=fn.description or None
        )
        tools.append(bw.Tool(spec))
    choice = req.tool_choice
    if choice == "none" and not _has_tool_blocks(messages):
        tools = []
    response = _response_tool(req.response_format)
    forced: bw.ToolChoice | None = None
    if response is not None:
        spec = bw.ToolSpec(response.name, bw.InputSchema(response.input_schema), response.description)
        tools.append(bw.Tool(spec))
        # With the client's tools too, the model may call them or answer through this one.
        forced = bw.ToolChoice(any={}) if len(tools) > 1 else bw.ToolChoice(tool=bw.NamedTool(response.name))
    if not tools:
        if _has_tool_blocks(messages):
            raise EdgeError(
                400, "Bedrock needs the tools declared when the messages hold tool calls", param="tools"
            )
        return None
    if forced is None:
        if isinstance(choice, NamedToolChoice):
            forced = bw.ToolChoice(tool=bw.NamedTool(choice.function.name))
        elif choice == "required":
            forced = bw.ToolChoice(any={})
        elif choice == "auto":
            forced = bw.ToolChoice(auto={})
    return bw.ToolConfig(tools=tools, tool_choice=forced)
