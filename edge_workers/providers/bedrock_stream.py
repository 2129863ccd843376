"""ConverseStream: the AWS event stream (`application/vnd.amazon.eventstream`) in, OpenAI
`chat.completion.chunk`s out.

Framing is parsed by botocore's `EventStreamBuffer` (prelude and message CRCs checked), fed each
network read as it arrives; the event's name is its `:event-type` header, an exception's is
`exception:<:exception-type>`. The events (messageStart, contentBlockStart for a tool call,
contentBlockDelta, contentBlockStop, messageStop, then metadata with the usage) map as the
Anthropic translator's do: tool calls numbered across the client's calls only, the
`response_format__` tool's input streamed as content.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
from botocore.eventstream import EventStreamBuffer, ParserError

from edge_workers.providers import bedrock_wire as bw
from edge_workers.providers.anthropic_wire import is_response_tool
from edge_workers.providers.base import StreamError, completion_id
from shared.errors import EdgeError
from shared.sse import EventTooLarge
from shared.wire import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkFunction,
    ChunkToolCall,
    Delta,
    ErrorDetail,
    Usage,
)

_decode_start = msgspec.json.Decoder(bw.ContentBlockStartEvent).decode
_decode_delta = msgspec.json.Decoder(bw.ContentBlockDeltaEvent).decode
_decode_stop = msgspec.json.Decoder(bw.MessageStopEvent).decode
_decode_metadata = msgspec.json.Decoder(bw.MetadataEvent).decode
_encode = msgspec.json.Encoder().encode
EXCEPTION = "exception:"


def _malformed(what: str) -> StreamError:
    return StreamError(ErrorDetail(f"upstream bedrock sent {what}", "upstream_error"), 502)


class EventStreamParser:
    """botocore's event-stream decoder behind the worker's parser interface. A message longer
    than `max_event_bytes` (a broken or hostile stream) raises EventTooLarge."""

    def __init__(self, max_event_bytes: int) -> None:
        self._buffer = EventStreamBuffer()
        self._max = max_event_bytes
        self._pending = 0  # bytes fed and not yet parsed into messages

    def feed_bytes(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        self._buffer.add_data(data)
        self._pending += len(data)
        try:
            for message in self._buffer:
                self._pending -= message.prelude.total_length
                headers = message.headers
                kind = headers.get(":message-type")
                if kind == "event":
                    yield str(headers.get(":event-type", "")), message.payload
                elif kind == "exception":
                    yield EXCEPTION + str(headers.get(":exception-type", "")), message.payload
                else:  # "error": a service error outside the model's exceptions
                    code = str(headers.get(":error-code", "error"))
                    yield EXCEPTION + code, _encode({"message": headers.get(":error-message", "")})
        except ParserError as e:
            raise _malformed(f"a malformed event stream ({type(e).__name__})") from None
        if self._pending > self._max:
            raise EventTooLarge

    def flush(self) -> Iterator[tuple[str, bytes]]:
        return iter(())  # a message cut short is no event: the stream did not finish


class BedrockChunkStream:
    def __init__(self, created: int, model: str) -> None:
        self._id = completion_id()  # Bedrock names no answer
        self._created = created
        self._model = model
        self._tools: dict[int, int | None] = {}  # block index -> call ordinal (None: response_format)
        self._calls = 0
        self._structured = False
        self.finished = False

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, ChatCompletionChunk]]:
        return [(_encode(chunk), chunk) for chunk in self._chunks(event, data)]

    def _chunks(self, event: str, data: bytes) -> list[ChatCompletionChunk]:
        try:
            if event == "messageStart":
                return [self._chunk(Delta(role="assistant", content=""))]
            if event == "contentBlockStart":
                return self._block_start(_decode_start(data))
            if event == "contentBlockDelta":
                return self._block_delta(_decode_delta(data))
            if event == "messageStop":
                stop = _decode_stop(data).stop_reason
                finish = bw.map_stop_reason(stop)
                if stop == "tool_use" and self._structured and not self._calls:
                    finish = "stop"  # the only "tool call" was the structured answer
                self.finished = True
                return [self._chunk(Delta(), finish)]
            if event == "metadata":
                usage = _decode_metadata(data).usage
                mapped = bw.map_usage(usage) if usage is not None else Usage()
                return [ChatCompletionChunk(self._id, self._created, self._model, [], usage=mapped)]
        except msgspec.DecodeError as e:
            raise _malformed(f"an unreadable {event} event: {e}") from None
        except EdgeError as e:  # a malformed model output
            raise StreamError(ErrorDetail(e.message, "upstream_error"), 502) from None
        if event.startswith(EXCEPTION):
            status, detail = bw.map_error(0, event.removeprefix(EXCEPTION), data)
            raise StreamError(detail, status)
        return []  # contentBlockStop, and event types Bedrock adds later

    def _block_start(self, ev: bw.ContentBlockStartEvent) -> list[ChatCompletionChunk]:
        use = ev.start.tool_use
        if use is None:
            return []
        if is_response_tool(use.name):
            if not self._structured:
                self._structured = True
                self._tools[ev.content_block_index] = None
            return []
        self._tools[ev.content_block_index] = self._calls
        call = ChunkToolCall(
            self._calls, id=use.tool_use_id, type="function", function=ChunkFunction(use.name, "")
        )
        self._calls += 1
        return [self._chunk(Delta(tool_calls=[call]))]

    def _block_delta(self, ev: bw.ContentBlockDeltaEvent) -> list[ChatCompletionChunk]:
        delta = ev.delta
        if delta.text:
            return [] if self._structured else [self._chunk(Delta(content=delta.text))]
        if delta.tool_use is None or ev.content_block_index not in self._tools:
            return []
        ordinal = self._tools[ev.content_block_index]
        if ordinal is None:
            return [self._chunk(Delta(content=delta.tool_use.input))]
        call = ChunkToolCall(ordinal, function=ChunkFunction(arguments=delta.tool_use.input))
        return [self._chunk(Delta(tool_calls=[call]))]

    def _chunk(self, delta: Delta, finish: str | None = None) -> ChatCompletionChunk:
        choice = ChunkChoice(index=0, delta=delta, finish_reason=finish)
        return ChatCompletionChunk(self._id, self._created, self._model, [choice])
