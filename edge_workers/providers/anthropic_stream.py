"""Anthropic Messages streaming events -> OpenAI `chat.completion.chunk`s.

The translator is fed one SSE event at a time and is pure (no I/O), so the worker owns the
connection and decides what to forward. Decisions, mirroring the non-streaming
`to_chat_completion`:

- Only text and tool_use blocks reach the client. Thinking, redacted_thinking, server tool
  blocks and their deltas are skipped (OpenAI's chunk has no field for them); so are `ping` and
  event types Anthropic may add later.
- Tool calls are numbered 0, 1, ... across the client's tool_use blocks only, as OpenAI's
  `tool_calls[].index` counts calls, not Anthropic's content blocks.
- The `response_format__` tool (structured output, see `anthropic.py`) streams its
  input_json_delta fragments as *content*, and a `tool_use` stop with no other call finishes as
  "stop". Text after it is dropped like in the non-streaming answer; text before it has already
  gone out and cannot be taken back (with tool_choice forcing the tool, Anthropic writes none).
- A tool_use block that streams no argument fragment (a call without arguments) gets "{}" at its
  content_block_stop, so the concatenated arguments always parse, as in the non-streaming answer.
- Usage counts on message_delta are cumulative and overwrite those from message_start, as the
  anthropic SDK's own accumulator does; cache tokens are folded in by `map_usage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import msgspec
from msgspec import Struct

from edge_workers.providers import anthropic_wire as aw
from edge_workers.providers.anthropic_wire import is_response_tool, map_error, map_stop_reason, map_usage
from edge_workers.providers.base import StreamError
from shared.anthropic_api import ERROR_STATUS
from shared.wire import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkFunction,
    ChunkToolCall,
    Delta,
    ErrorDetail,
    Usage,
)

__all__ = ["AnthropicStreamError", "AnthropicStreamTranslator"]

# ---- event shapes (loose: unknown fields are ignored) ------------------------------------


class _StartMessage(Struct):
    id: str
    model: str
    usage: aw.AnthropicUsage = msgspec.field(default_factory=aw.AnthropicUsage)


class _MessageStart(Struct, tag_field="type", tag="message_start"):
    message: _StartMessage


class _ContentBlockStart(Struct, tag_field="type", tag="content_block_start"):
    index: int
    content_block: aw.ContentBlock


class _BlockDelta(Struct):
    type: str
    text: str | None = None  # text_delta
    partial_json: str | None = None  # input_json_delta


class _ContentBlockDelta(Struct, tag_field="type", tag="content_block_delta"):
    index: int
    delta: _BlockDelta


class _ContentBlockStop(Struct, tag_field="type", tag="content_block_stop"):
    index: int


class _MessageDeltaBody(Struct):
    stop_reason: str | None = None


class _DeltaUsage(Struct):
    # Every count is optional here: an absent one must not erase what message_start said.
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _MessageDelta(Struct, tag_field="type", tag="message_delta"):
    delta: _MessageDeltaBody
    usage: _DeltaUsage | None = None


class _MessageStop(Struct, tag_field="type", tag="message_stop"):
    pass


class _Error(Struct, tag_field="type", tag="error"):
    error: aw.ErrorObject


class _Envelope(Struct):
    type: str = ""


_Event = (
    _MessageStart
    | _ContentBlockStart
    | _ContentBlockDelta
    | _ContentBlockStop
    | _MessageDelta
    | _MessageStop
    | _Error
)
# Events are picked by name before decoding, so ping and types Anthropic adds later are skipped
# without being decoded (and without failing the stream).
_KNOWN = frozenset(t.__struct_config__.tag for t in get_args(_Event))
_decode_event = msgspec.json.Decoder(_Event).decode
_decode_envelope = msgspec.json.Decoder(_Envelope).decode
_encode = msgspec.json.Encoder().encode


class AnthropicStreamError(StreamError):
    """The stream failed: an `error` event from Anthropic, or an event the gateway cannot read.
    A `StreamError` (detail, status), so code handling any provider's stream errors catches it."""


@dataclass(slots=True)
class _ToolBlock:
    ordinal: int | None  # None for the response_format tool, whose input becomes content
    input: Any  # from content_block_start: normally {}, the input is streamed after it
    streamed: bool = False


class AnthropicStreamTranslator:
    def __init__(self, created: int) -> None:
        self._created = created
        self._id = "chatcmpl-"
        self._model = ""
        self._usage: aw.AnthropicUsage | None = None
        self._tools: dict[int, _ToolBlock] = {}  # by Anthropic content block index
        self._calls = 0  # client tool calls seen so far
        self._structured = False  # the response_format tool has started
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def usage(self) -> Usage | None:
        """Running totals once message_start is seen; final once `finished`."""
        return map_usage(self._usage) if self._usage is not None else None

    def feed(self, event: str, data: bytes) -> list[ChatCompletionChunk]:
        """One SSE event (its name, "" if absent, and its raw data) -> the chunks it produces."""
        try:
            kind = event or _decode_envelope(data).type
            if kind not in _KNOWN:
                return []
            ev = _decode_event(data)
        except msgspec.DecodeError as e:  # ValidationError included
            why = f"upstream sent an unreadable {event or 'stream'} event: {e}"
            raise AnthropicStreamError(ErrorDetail(message=why, type="upstream_error"), 502) from None
        if isinstance(ev, _MessageStart):
            self._id = f"chatcmpl-{ev.message.id}"
            self._model = ev.message.model
            self._usage = ev.message.usage
            return [self._chunk(Delta(role="assistant", content=""))]
        if isinstance(ev, _ContentBlockStart):
            return self._block_start(ev.index, ev.content_block)
        if isinstance(ev, _ContentBlockDelta):
            return self._block_delta(ev.index, ev.delta)
        if isinstance(ev, _ContentBlockStop):
            tool = self._tools.get(ev.index)
            if tool is None or tool.streamed:
                return []
            return self._arguments(tool, _encode(tool.input or {}).decode())
        if isinstance(ev, _MessageDelta):
            self._merge_usage(ev.usage)
            finish = map_stop_reason(ev.delta.stop_reason) or "stop"
            if ev.delta.stop_reason == "tool_use" and self._structured and not self._calls:
                finish = "stop"  # the only "tool call" was the structured answer
            return [self._chunk(Delta(), finish)]
        if isinstance(ev, _MessageStop):
            self._finished = True
            # Usage-only, as OpenAI ends a stream with include_usage; the caller decides whether to send it.
            usage = self.usage or Usage()
            return [
                ChatCompletionChunk(
                    id=self._id, created=self._created, model=self._model, choices=[], usage=usage
                )
            ]
        status = ERROR_STATUS.get(ev.error.type, 500)
        raise AnthropicStreamError(map_error(status, ev.error.type, ev.error.message), status)

    def _block_start(self, index: int, block: aw.ContentBlock) -> list[ChatCompletionChunk]:
        if block.type == "text":
            # Streamed text blocks start empty; a non-empty start would still be part of the answer.
            return [self._chunk(Delta(content=block.text))] if block.text and not self._structured else []
        if block.type != "tool_use" or not block.name:
            return []  # thinking, server tools, ...: their deltas find no block and are skipped too
        if is_response_tool(block.name):
            if self._structured:
                return []  # a second structured answer would corrupt the JSON content
            self._structured = True
            self._tools[index] = _ToolBlock(None, block.input)
            return []
        self._tools[index] = _ToolBlock(self._calls, block.input)
        call = ChunkToolCall(
            index=self._calls,
            id=block.id or "",
            type="function",
            function=ChunkFunction(name=block.name, arguments=""),
        )
        self._calls += 1
        return [self._chunk(Delta(tool_calls=[call]))]

    def _block_delta(self, index: int, delta: _BlockDelta) -> list[ChatCompletionChunk]:
        if delta.type == "text_delta" and delta.text and not self._structured:
            return [self._chunk(Delta(content=delta.text))]
        tool = self._tools.get(index)
        if delta.type == "input_json_delta" and delta.partial_json and tool is not None:
            return self._arguments(tool, delta.partial_json)
        return []

    def _arguments(self, tool: _ToolBlock, fragment: str) -> list[ChatCompletionChunk]:
        tool.streamed = True
        if tool.ordinal is None:
            return [self._chunk(Delta(content=fragment))]
        call = ChunkToolCall(index=tool.ordinal, function=ChunkFunction(arguments=fragment))
        return [self._chunk(Delta(tool_calls=[call]))]

    def _merge_usage(self, delta: _DeltaUsage | None) -> None:
        if delta is None:
            return
        usage = self._usage if self._usage is not None else aw.AnthropicUsage()
        for name in delta.__struct_fields__:
            value = getattr(delta, name)
            if value is not None:
                setattr(usage, name, value)
        self._usage = usage

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(id=self._id, created=self._created, model=self._model, choices=[choice])


class AnthropicChunkStream:
    """The adapter-facing translator: each chunk also encoded, as the worker forwards JSON."""

    def __init__(self, created: int) -> None:
        self._translator = AnthropicStreamTranslator(created)

    @property
    def finished(self) -> bool:
        return self._translator.finished

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, ChatCompletionChunk]]:
        return [(_encode_chunk(chunk), chunk) for chunk in self._translator.feed(event, data)]


_encode_chunk = msgspec.json.Encoder().encode
