"""OpenAI chat request -> Gemini `generateContent` request (see `gemini` for the mapping rules)."""

from __future__ import annotations

import mimetypes
from typing import Any

import msgspec

from edge_workers.providers import gemini_wire as gw
from edge_workers.providers.anthropic_request import parse_data_url, tool_arguments
from shared.errors import EdgeError
from shared.wire import (
    AssistantMessage,
    AudioPart,
    ChatCompletionRequest,
    DeveloperMessage,
    FilePart,
    ImagePart,
    JsonObjectFormat,
    JsonSchemaFormat,
    NamedToolChoice,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    UserPart,
    validation_error_param,
)

# File URIs Gemini reads itself: its Files API and Cloud Storage. Any other URL would have to
# be fetched by the worker, which would let a client make the gateway's network fetch for it.
FILE_API_PREFIX = "https://generativelanguage.googleapis.com/"
_decode_json = msgspec.json.Decoder().decode


def _unsupported(param: str, why: str) -> EdgeError:
    return EdgeError(400, why, param=param)


def to_gemini_request(body: dict[str, Any]) -> gw.GenerateContentRequest:
    """The client's decoded chat request -> a Gemini request (the model is in the URL)."""
    try:
        req = msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as e:
        message, param = validation_error_param(e)
        raise EdgeError(400, message, param=param) from None
    _reject_unsupported(req, body)
    system, contents = _convert_messages(req)
    tools = [
        _declaration(i, t.function.name, t.function.description, t.function.parameters)
        for i, t in enumerate(req.tools or [])
    ]
    return gw.GenerateContentRequest(
        contents=contents,
        system_instruction=gw.Content(parts=[gw.Part(text=t) for t in system]) if system else None,
        tools=[gw.Tool(function_declarations=tools)] if tools else None,
        tool_config=_tool_config(req) if tools else None,
        generation_config=_generation_config(req, body),
    )


def _reject_unsupported(req: ChatCompletionRequest, body: dict[str, Any]) -> None:
    if req.logprobs or req.top_logprobs:
        param = "logprobs" if req.logprobs else "top_logprobs"
        raise _unsupported(param, "logprobs are not supported for Gemini models via this gateway")
    if req.logit_bias:
        raise _unsupported("logit_bias", "Gemini models do not support logit_bias")
    for legacy in ("functions", "function_call"):
        if body.get(legacy) is not None:
            raise _unsupported(
                legacy, f"the deprecated '{legacy}' is not supported; use tools and tool_choice"
            )


def _convert_messages(req: ChatCompletionRequest) -> tuple[list[str], list[gw.Content]]:
    system: list[str] = []
    contents: list[gw.Content] = []
    call_names: dict[str, str] = {}  # tool call id -> function name (Gemini pairs by name)
    for i, m in enumerate(req.messages):
        if isinstance(m, SystemMessage | DeveloperMessage):
            system.extend(t for t in _texts(m.content) if t.strip())
            continue
        if isinstance(m, UserMessage):
            turn = gw.Content(role="user", parts=_user_parts(m.content, i))
        elif isinstance(m, AssistantMessage):
            turn = gw.Content(role="model", parts=_model_parts(m, i, call_names))
        elif isinstance(m, ToolMessage):
            turn = gw.Content(role="user", parts=[_function_response(m, i, call_names)])
        else:
            raise _unsupported(
                f"messages[{i}].role", "the deprecated 'function' role is not supported; use tool messages"
            )
        if not turn.parts:
            continue
        if contents and contents[-1].role == turn.role:  # Gemini wants user and model to alternate
            contents[-1].parts.extend(turn.parts)
        else:
            contents.append(turn)
    if not contents:
        raise EdgeError(
            400, "Gemini needs at least one non-empty user or assistant message", param="messages"
        )
    return system, contents


def _texts(content: str | list[TextPart]) -> list[str]:
    return [content] if isinstance(content, str) else [p.text for p in content]


def _user_parts(content: str | list[UserPart], i: int) -> list[gw.Part]:
    if isinstance(content, str):
        return [gw.Part(text=content)] if content else []
    parts: list[gw.Part] = []
    for j, part in enumerate(content):
        where = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                parts.append(gw.Part(text=part.text))
        elif isinstance(part, ImagePart):
            parts.append(media_part(part.image_url.url, where))
        elif isinstance(part, AudioPart):
            mime = f"audio/{part.input_audio.format.lower()}"
            parts.append(gw.Part(inline_data=gw.Blob(mime_type=mime, data=part.input_audio.data)))
        else:
            parts.append(_file_part(part, where))
    return parts


def media_part(url: str, where: str) -> gw.Part:
    """An image URL as Gemini takes it: a data: URL inline, a gs:// or Files API URI by reference.
    Other http(s) URLs are refused: the worker does not fetch URLs a client names."""
    if url.startswith("data:"):
        media, data = parse_data_url(url, where)
        return gw.Part(inline_data=gw.Blob(mime_type=media, data=data))
    if url.startswith("gs://") or url.startswith(FILE_API_PREFIX):
        guessed = mimetypes.guess_type(url)[0]
        if guessed is None:
            why = "cannot tell the media type of this file URI from its extension"
            raise EdgeError(400, why, param=where)
        return gw.Part(file_data=gw.FileData(mime_type=guessed, file_uri=url))
    raise EdgeError(
        400,
        "Gemini models take images via this gateway as base64 data: URLs, gs:// URIs or Gemini Files "
        "API URIs; the gateway does not fetch http(s) URLs",
        param=where,
    )


def _file_part(part: FilePart, where: str) -> gw.Part:
    data = part.file.file_data
    if data and data.startswith("data:"):
        media, b64 = parse_data_url(data, where)
        return gw.Part(inline_data=gw.Blob(mime_type=media, data=b64))
    why = "Gemini models take file parts via this gateway only as file_data ('data:<type>;base64,...')"
    raise _unsupported(where, why)


def _model_parts(m: AssistantMessage, i: int, call_names: dict[str, str]) -> list[gw.Part]:
    if m.function_call is not None:
        raise _unsupported(
            f"messages[{i}].function_call", "the deprecated function_call is not supported; use tool_calls"
        )
    if isinstance(m.content, str):
        texts = [m.content]
    else:  # refusal parts replay the model's own earlier refusal: nothing to send
        texts = [p.text for p in m.content or [] if isinstance(p, TextPart)]
    parts = [gw.Part(text=t) for t in texts if t]
    for k, call in enumerate(m.tool_calls or []):
        args = tool_arguments(call.function.arguments, f"messages[{i}].tool_calls[{k}].function.arguments")
        call_names[call.id] = call.function.name
        function_call = gw.FunctionCall(name=call.function.name, args=args)
        parts.append(gw.Part(function_call=function_call, thought_signature=gw.signature_of(call.id)))
    return parts


def _function_response(m: ToolMessage, i: int, call_names: dict[str, str]) -> gw.Part:
    name = call_names.get(m.tool_call_id)
    if name is None:
        why = "a tool message must answer a tool call of an earlier assistant message (Gemini pairs by name)"
        raise EdgeError(400, why, param=f"messages[{i}].tool_call_id")
    text = m.content if isinstance(m.content, str) else "".join(p.text for p in m.content)
    try:
        value = _decode_json(text) if text.lstrip().startswith("{") else None
    except msgspec.DecodeError:
        value = None
    # Gemini wants an object; a JSON object result goes as it is, anything else under "result"
    # (as google-genai's own automatic function calling sends it).
    response = value if isinstance(value, dict) else {"result": text}
    return gw.Part(function_response=gw.FunctionResponse(name=name, response=response))


def _declaration(
    i: int, name: str, description: str | None, parameters: dict[str, Any] | None
) -> gw.FunctionDeclaration:
    schema = to_gemini_schema(parameters, f"tools[{i}].function.parameters") if parameters else None
    if schema is not None and not schema.get("properties"):
        schema = None  # Gemini refuses an OBJECT without properties: a function without arguments
    return gw.FunctionDeclaration(name=name, description=description, parameters=schema)


def _tool_config(req: ChatCompletionRequest) -> gw.ToolConfig | None:
    choice = req.tool_choice
    if isinstance(choice, NamedToolChoice):
        config = gw.FunctionCallingConfig(mode="ANY", allowed_function_names=[choice.function.name])
    elif choice == "required":
        config = gw.FunctionCallingConfig(mode="ANY")
    elif choice == "none":
        config = gw.FunctionCallingConfig(mode="NONE")
    elif choice == "auto":
        config = gw.FunctionCallingConfig(mode="AUTO")
    else:
        return None
    return gw.ToolConfig(function_calling_config=config)


def _generation_config(req: ChatCompletionRequest, body: dict[str, Any]) -> gw.GenerationConfig | None:
    stop = [req.stop] if isinstance(req.stop, str) else req.stop
    mime, schema = None, None
    fmt = req.response_format
    if isinstance(fmt, JsonSchemaFormat):
        mime = "application/json"
        if fmt.json_schema.schema:
            schema = to_gemini_schema(fmt.json_schema.schema, "response_format.json_schema.schema")
    elif isinstance(fmt, JsonObjectFormat):
        mime = "application/json"
    top_k = body.get("top_k")
    config = gw.GenerationConfig(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=top_k if isinstance(top_k, int) else None,
        candidate_count=req.n if req.n and req.n > 1 else None,
        max_output_tokens=req.max_completion_tokens or req.max_tokens,
        stop_sequences=stop or None,
        presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty,
        seed=req.seed,
        response_mime_type=mime,
        response_schema=schema,
    )
    return config if config != gw.GenerationConfig() else None


# ---- JSON Schema -> Gemini's Schema (an OpenAPI 3.0 subset) -------------------------------

_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
_FORMATS = {"date-time", "enum", "int32", "int64", "float", "double"}
_KEPT = (
    "description",
    "title",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
    "minProperties",
    "maxProperties",
    "pattern",
    "default",
    "propertyOrdering",
)


def to_gemini_schema(schema: dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON Schema as Gemini's `Schema`: `$ref`s inlined, `["T", "null"]` as `nullable`,
    `const` as a one-value enum, types upper-case; keywords Gemini does not know (such as
    `additionalProperties`, `$schema`) are dropped, since Gemini refuses them."""
    return _convert(schema, schema.get("$defs") or schema.get("definitions") or {}, where, ())


def _convert(node: Any, defs: dict[str, Any], where: str, seen: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {}
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        if name in seen or name not in defs:
            why = "recursive $ref" if name in seen else f"unresolvable $ref {ref!r}"
            raise EdgeError(400, f"Gemini schemas cannot express a {why}", param=where)
        return _convert(defs[name], defs, where, (*seen, name))
    out: dict[str, Any] = {k: node[k] for k in _KEPT if k in node}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            kind = kinds[0]
        else:
            out["anyOf"] = [_convert({**node, "type": k}, defs, where, seen) for k in kinds]
            kind = None
    if "const" in node:
        node = {**node, "enum": [node["const"]]}
    if isinstance(kind, str) and kind in _TYPES:
        out["type"] = kind.upper()
    elif kind == "null":
        out["nullable"] = True
    if "enum" in node and isinstance(node["enum"], list):
        values = [v for v in node["enum"] if v is not None]
        if len(values) < len(node["enum"]):
            out["nullable"] = True
        out["enum"] = [v if isinstance(v, str) else msgspec.json.encode(v).decode() for v in values]
        out["type"] = "STRING"  # Gemini's enums are strings only
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        out["format"] = fmt
    if isinstance(node.get("properties"), dict):
        props = {k: _convert(v, defs, where, seen) for k, v in node["properties"].items()}
        if props:
            out["properties"] = props
        required = [r for r in node.get("required") or [] if r in props]
        if required:
            out["required"] = required
    if "items" in node:
        out["items"] = _convert(node["items"], defs, where, seen)
    for union in ("anyOf", "oneOf"):
        options = node.get(union)
        if isinstance(options, list):
            kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(kept) < len(options):
                out["nullable"] = True
            converted = [_convert(o, defs, where, seen) for o in kept]
            if len(converted) == 1:
                out.update(converted[0])
            elif converted:
                out["anyOf"] = converted
    if isinstance(node.get("allOf"), list):
        for sub in node["allOf"]:
            out.update(_convert(sub, defs, where, seen))
    return out
