"""OpenAI chat-completions wire shapes, as msgspec Structs.

These mirror `CreateChatCompletionRequest` and `CreateChatCompletionResponse` in OpenAI's
OpenAPI spec. They are the single definition of the wire shape for both tiers: the front
validates requests with them, provider adapters translate to and from them.

Request fields the gateway does not model are not lost: the front keeps the decoded JSON
object and forwards it as-is to OpenAI-compatible upstreams (see `edge_workers.providers`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

# ---- request: content parts -------------------------------------------------------------


class TextPart(Struct, tag_field="type", tag="text"):
    text: str


class ImageURL(Struct):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(Struct, tag_field="type", tag="image_url"):
    image_url: ImageURL


class InputAudio(Struct):
    data: str
    format: str


class AudioPart(Struct, tag_field="type", tag="input_audio"):
    input_audio: InputAudio


class FileRef(Struct):
    file_data: str | None = None
    file_id: str | None = None
    filename: str | None = None


class FilePart(Struct, tag_field="type", tag="file"):
    file: FileRef


class RefusalPart(Struct, tag_field="type", tag="refusal"):
    refusal: str


UserPart = TextPart | ImagePart | AudioPart | FilePart
AssistantPart = TextPart | RefusalPart

# ---- request: messages ------------------------------------------------------------------


class FunctionCall(Struct):
    name: str
    arguments: str


class ToolCall(Struct):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class SystemMessage(Struct, tag_field="role", tag="system"):
    content: str | list[TextPart]
    name: str | None = None


class DeveloperMessage(Struct, tag_field="role", tag="developer"):
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(Struct, tag_field="role", tag="user"):
    content: str | list[UserPart]
    name: str | None = None


class AssistantMessage(Struct, tag_field="role", tag="assistant"):
    content: str | list[AssistantPart] | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = None


class ToolMessage(Struct, tag_field="role", tag="tool"):
    content: str | list[TextPart]
    tool_call_id: str


class FunctionMessage(Struct, tag_field="role", tag="function"):
    content: str | None
    name: str


Message = SystemMessage | DeveloperMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage

# ---- request: tools and formats ---------------------------------------------------------


class FunctionDef(Struct):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Struct):
    function: FunctionDef
    type: Literal["function"] = "function"


class NamedFunction(Struct):
    name: str


class NamedToolChoice(Struct):
    function: NamedFunction
    type: Literal["function"] = "function"


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class JsonSchemaSpec(Struct):
    name: str
    schema: dict[str, Any] | None = None
    description: str | None = None
    strict: bool | None = None


class TextFormat(Struct, tag_field="type", tag="text"):
    pass


class JsonObjectFormat(Struct, tag_field="type", tag="json_object"):
    pass


class JsonSchemaFormat(Struct, tag_field="type", tag="json_schema"):
    json_schema: JsonSchemaSpec


ResponseFormat = TextFormat | JsonObjectFormat | JsonSchemaFormat


class StreamOptions(Struct):
    include_usage: bool | None = None


Temperature = Annotated[float, Meta(ge=0, le=2)]
Penalty = Annotated[float, Meta(ge=-2, le=2)]
PositiveInt = Annotated[int, Meta(ge=1)]


class ChatCompletionRequest(Struct):
    """The fields the gateway understands; anything else rides along in the raw JSON object."""

    model: Annotated[str, Meta(min_length=1)]
    messages: Annotated[list[Message], Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    temperature: Temperature | None = None
    top_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    stop: str | list[str] | None = None
    n: Annotated[int, Meta(ge=1, le=128)] | None = None
    seed: int | None = None
    user: str | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    logit_bias: dict[str, float] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    metadata: dict[str, str] | None = None


# ---- response ---------------------------------------------------------------------------


class PromptTokensDetails(Struct, omit_defaults=True):
    """How many prompt tokens were read from (or, where the provider bills it, written to) its
    prompt cache. `cached_tokens` is OpenAI's; `cache_write_tokens` is OpenRouter's spelling of
    what Anthropic calls cache_creation_input_tokens. Both are part of `prompt_tokens`."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None
    cache_write_tokens: int | None = None


class Usage(Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # UNSET when absent, so answers without it encode exactly as before (no `null`).
    prompt_tokens_details: PromptTokensDetails | msgspec.UnsetType | None = msgspec.UNSET


class ResponseMessage(Struct):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(Struct):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: Any = None


class ChatCompletion(Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    object: Literal["chat.completion"] = "chat.completion"
    system_fingerprint: str | None = None


# ---- streaming ----------------------------------------------------------------------------


class ChunkFunction(Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(Struct, omit_defaults=True):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: ChunkFunction | None = None


class Delta(Struct, omit_defaults=True):
    role: Literal["assistant"] | None = None
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionChunk(Struct):
    """One `data:` event of a streamed chat completion, as OpenAI sends it."""

    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | None = None
    system_fingerprint: str | None = None


class Model(Struct):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelList(Struct):
    data: list[Model]
    object: Literal["list"] = "list"


# ---- errors -----------------------------------------------------------------------------


class ErrorDetail(Struct):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(Struct):
    error: ErrorDetail


json_encoder = msgspec.json.Encoder()


def validation_error_param(error: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec's message and the field it names, as OpenAI's `param` spells it
    ("Expected `int`, got `str` - at `$.messages[0].content`" -> "messages[0].content")."""
    message, _, where = str(error).partition(" - at `$")
    param = where.rstrip("`").lstrip(".") or None
    if message.startswith("Object missing required field"):
        missing = message.rpartition("`")[0].rpartition("`")[2]
        param = f"{param}.{missing}" if param else missing
    return message, param
