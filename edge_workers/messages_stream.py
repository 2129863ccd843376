"""Streamed answers for Anthropic Messages clients, event by event, unbuffered.

`AnthropicEvents`: an Anthropic upstream's events go out as they came (each re-framed, never
re-encoded), and are accumulated into the whole message for the cache, as the anthropic SDK's
own accumulator does. `ChatToEvents`: an OpenAI-shaped stream (any provider adapter's chunks)
becomes Anthropic's event sequence as each chunk arrives.

Both are an `AnswerStream` (edge_workers/streaming.py): `feed` returns the bodies to forward,
`finished` says the upstream completed the answer, `answer()` the whole of it and its usage.
"""

from __future__ import annotations

from typing import Any

import msgspec

from edge_workers.providers import anthropic_wire as aw
from edge_workers.providers.anthropic_stream import AnthropicStreamError
from edge_workers.providers.base import StreamTranslator
from shared import anthropic_events as ev
from shared.anthropic_api import ERROR_STATUS, event_frame, map_error, stop_reason_of
from shared.chunks import ChunkAssembler
from shared.wire import ChatCompletion, ErrorDetail, Usage

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode
_usage_of = msgspec.json.Decoder(aw.AnthropicUsage).decode


def _unreadable(why: str) -> AnthropicStreamError:
    return AnthropicStreamError(ErrorDetail(message=why, type="upstream_error"), 502)


class AnthropicEvents:
    """An Anthropic upstream's stream, passed through."""

    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self._json: dict[int, list[str]] = {}  # tool_use input fragments by block index
        self.finished = False

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, bool]]:
        try:
            body = _decode(data)
        except msgspec.DecodeError:
            raise _unreadable(f"upstream sent an unreadable {event or 'stream'} event") from None
        kind = event or (body.get("type", "") if isinstance(body, dict) else "")
        if kind == "error":
            error = body.get("error") or {}
            error_type, message = str(error.get("type", "")), str(error.get("message", ""))
            status = ERROR_STATUS.get(error_type, 500)
            raise AnthropicStreamError(map_error(status, error_type, message), status)
        try:
            self._accumulate(kind, body)
        except (AttributeError, KeyError, TypeError, IndexError, msgspec.DecodeError):
            raise _unreadable(f"upstream sent an unexpected {kind} event") from None
        return [(event_frame(kind, data), False)]

    def _accumulate(self, kind: str, body: dict[str, Any]) -> None:
        if kind == "message_start":
            self.message = dict(body["message"])
            self.message["content"] = list(self.message.get("content") or [])
            return
        message = self.message
        if message is None:
            return  # ping (or anything) before message_start: forwarded, nothing to keep
        content: list[dict[str, Any]] = message["content"]
        if kind == "content_block_start":
            block = dict(body["content_block"])
            while len(content) <= body["index"]:
                content.append({})
            content[body["index"]] = block
        elif kind == "content_block_delta":
            block, delta = content[body["index"]], body["delta"]
            kind = delta.get("type")
            if kind == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif kind == "input_json_delta":
                self._json.setdefault(body["index"], []).append(delta["partial_json"])
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif kind == "signature_delta":
                block["signature"] = delta["signature"]
            elif kind == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_stop":
            fragments = self._json.pop(body["index"], None)
            if fragments is not None:
                joined = "".join(fragments)
                content[body["index"]]["input"] = _decode(joined) if joined else {}
        elif kind == "message_delta":
            message.update({k: v for k, v in (body.get("delta") or {}).items()})
            usage = message.setdefault("usage", {})
            # Cumulative counts: those present overwrite message_start's, as the SDK does.
            usage.update({k: v for k, v in (body.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.finished = True

    @property
    def usage(self) -> Usage | None:
        if self.message is None:
            return None
        return aw.map_usage(_usage_of(_encode(self.message.get("usage") or {})))

    def answer(self) -> bytes:
        return _encode(self.message)


class ChatToEvents:
    """An OpenAI-shaped stream (the provider adapter's chunks) as Anthropic's events."""

    def __init__(self, translator: StreamTranslator) -> None:
        self._translator = translator
        self._assembler = ChunkAssembler()
        self._started = False
        self._index = -1  # the open content block's index (-1: none open)
        self._open: str | None = None  # its kind: "text", or "tool:<OpenAI call index>"
        self._stop_reason: str | None = None
        self._done = False  # message_stop went out

    @property
    def finished(self) -> bool:
        return self._done and self._assembler.complete

    @property
    def usage(self) -> Usage | None:
        return self._assembler.usage

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, bool]]:
        out: list[bytes] = []
        for _, chunk in self._translator.feed(event, data):
            self._assembler.add(chunk)
            if not self._started:
                self._started = True
                start_usage = {"input_tokens": 0, "output_tokens": 0}
                out += [ev.message_start(_message_id(chunk.id), chunk.model, start_usage), ev.PING]
            for choice in chunk.choices[:1]:  # an Anthropic message has one answer
                delta = choice.delta
                if delta.content:
                    if self._open != "text":
                        out += self._open_block("text", {"type": "text", "text": ""})
                    out.append(ev.text_delta(self._index, delta.content))
                for call in delta.tool_calls or ():
                    kind = f"tool:{call.index}"
                    if self._open != kind:
                        block: dict[str, Any] = {
                            "type": "tool_use",
                            "id": call.id or f"toolu_{call.index}",
                            "name": call.function.name if call.function else "",
                            "input": {},
                        }
                        out += self._open_block(kind, block)
                    if call.function is not None and call.function.arguments:
                        out.append(ev.json_delta(self._index, call.function.arguments))
                if choice.finish_reason is not None:
                    self._stop_reason = stop_reason_of(choice.finish_reason)
                    out += self._close_block()
            if chunk.usage is not None and not chunk.choices and self._stop_reason is not None:
                out += self._end(chunk.usage)  # OpenAI's usage chunk comes after the finish
        if self._translator.finished and self._stop_reason is not None and not self._done:
            out += self._end(self._assembler.usage)  # a stream without a usage chunk
        return [(frame, False) for frame in out]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close_block()
        self._index += 1
        self._open = kind
        out.append(ev.block_start(self._index, block))
        return out

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [ev.block_stop(self._index)]

    def _end(self, usage: Usage | None) -> list[bytes]:
        if self._done:
            return []
        self._done = True
        counts = aw.anthropic_usage(usage)
        final = {"input_tokens": counts.input_tokens, "output_tokens": counts.output_tokens}
        if counts.cache_read_input_tokens is not None:
            final["cache_read_input_tokens"] = counts.cache_read_input_tokens
        if counts.cache_creation_input_tokens is not None:
            final["cache_creation_input_tokens"] = counts.cache_creation_input_tokens
        return [ev.message_delta(self._stop_reason, None, final), ev.MESSAGE_STOP]

    def answer(self) -> bytes:
        return _encode(to_anthropic_message(self._assembler.completion()))


def _message_id(chat_id: str) -> str:
    """An Anthropic-looking id for an OpenAI answer (the same one streamed or not)."""
    return "msg_" + chat_id.removeprefix("chatcmpl-")


def to_anthropic_message(completion: ChatCompletion) -> dict[str, Any]:
    """An OpenAI chat.completion -> the Anthropic message saying the same (first choice).
    `edge_workers.providers.anthropic.to_chat_completion` read backwards."""
    choice = completion.choices[0]
    message = choice.message
    content: list[dict[str, Any]] = []
    text = message.content or message.refusal
    if text:
        content.append({"type": "text", "text": text})
    for call in message.tool_calls or ():
        try:
            arguments = _decode(call.function.arguments) if call.function.arguments.strip() else {}
        except msgspec.DecodeError:
            arguments = {}
        if not isinstance(arguments, dict):
            arguments = {}
        content.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    stop_reason = (
        "refusal" if message.refusal and not message.content else stop_reason_of(choice.finish_reason)
    )
    usage = aw.anthropic_usage(completion.usage)
    return {
        "id": _message_id(completion.id),
        "type": "message",
        "role": "assistant",
        "model": completion.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": msgspec.structs.asdict(usage),
    }
