"""Anthropic's streaming events, written: what a worker sends when it translates an OpenAI-shaped
stream for an Anthropic client, and what the front sends when it replays a cached message.

The sequence is Anthropic's: message_start, ping, then per content block content_block_start,
its deltas (text_delta, input_json_delta) and content_block_stop, then message_delta (stop
reason, final usage) and message_stop.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.anthropic_api import event_frame

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.decode

PING = event_frame("ping", b'{"type":"ping"}')
MESSAGE_STOP = event_frame("message_stop", b'{"type":"message_stop"}')


def message_start(message_id: str, model: str, usage: dict[str, Any]) -> bytes:
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    return event_frame("message_start", _encode({"type": "message_start", "message": message}))


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event_frame(
        "content_block_start",
        _encode({"type": "content_block_start", "index": index, "content_block": block}),
    )


def text_delta(index: int, text: str) -> bytes:
    delta = {"type": "text_delta", "text": text}
    return event_frame(
        "content_block_delta", _encode({"type": "content_block_delta", "index": index, "delta": delta})
    )


def json_delta(index: int, partial_json: str) -> bytes:
    delta = {"type": "input_json_delta", "partial_json": partial_json}
    return event_frame(
        "content_block_delta", _encode({"type": "content_block_delta", "index": index, "delta": delta})
    )


def block_stop(index: int) -> bytes:
    return event_frame("content_block_stop", _encode({"type": "content_block_stop", "index": index}))


def message_delta(stop_reason: str | None, stop_sequence: str | None, usage: dict[str, Any]) -> bytes:
    body = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": usage,
    }
    return event_frame("message_delta", _encode(body))


def replay_events(message_json: bytes) -> bytes:
    """A whole (cached) message as the events that would have streamed it: each text block as
    one text_delta, each tool_use block's input as one input_json_delta, other blocks (thinking,
    server tools) whole in their content_block_start. Raises for a body that is not a message
    (the caller treats the entry as a miss)."""
    message = _decode(message_json)
    if not isinstance(message, dict) or message.get("type") != "message":
        raise ValueError("not an Anthropic message")
    usage = message.get("usage") or {}
    start_usage = {**usage, "output_tokens": 1 if usage.get("output_tokens") else 0}
    out = [message_start(message["id"], message.get("model", ""), start_usage), PING]
    for index, block in enumerate(message.get("content") or ()):
        kind = block.get("type")
        if kind == "text":
            out += [block_start(index, {**block, "text": ""}), text_delta(index, block.get("text", ""))]
        elif kind == "tool_use":
            out.append(block_start(index, {**block, "input": {}}))
            out.append(json_delta(index, _encode(block.get("input") or {}).decode()))
        else:
            out.append(block_start(index, block))
        out.append(block_stop(index))
    final_usage = {"output_tokens": usage.get("output_tokens", 0)}
    for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        if usage.get(name) is not None:
            final_usage[name] = usage[name]
    out.append(message_delta(message.get("stop_reason"), message.get("stop_sequence"), final_usage))
    out.append(MESSAGE_STOP)
    return b"".join(out)
