"""Deterministic content, behaviour markers and small helpers shared by both fake APIs."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

import msgspec

from edge_agent.fake_upstream.schema import instance

encode = msgspec.json.encode
decode = msgspec.json.decode

MARKER_PREFIX = "[[fake:"
MARKER_RE = re.compile(r"\[\[fake:([a-z_]+)(?:=([^\]]*))?\]\]")

_B64_TO_ALNUM = bytes.maketrans(b"+/", b"Xy")

# 64 words, so one hash byte picks one word without bias (byte & 63).
VOCAB = (
    "the quick answer is simple and the model agrees that every cache should stay warm "
    "while workers drain their queues quietly under steady load so latency remains low "
    "for each request we echo a little context then add some plain filler words here "
    "because tests need stable text that never changes between runs of this fake server "
    "and every reply ends right on time"
).split()
assert len(VOCAB) == 64


@dataclass(frozen=True, slots=True)
class Markers:
    """Behaviour switches read from `[[fake:key=value]]` markers in the last user message."""

    status: int | None = None
    retry_after: float | None = None
    delay_ms: float = 0.0
    timeout: bool = False
    drop: bool = False
    chunk_delay_ms: float = 0.0
    stream_error_after: int | None = None
    stream_drop_after: int | None = None
    words: int | None = None
    times: int | None = None  # failure markers apply to the first N requests with the same key only
    bad_body: str | None = None  # a 2xx answer that is not a completion: error_200, no_finish, not_json
    huge_body_mb: int | None = None  # a 2xx body of N MiB
    sse_no_newlines_mb: int | None = None  # a 2xx event stream of N MiB that never ends a line
    error_code: str | None = None  # the OpenAI `code` of a `status` error, e.g. context_length_exceeded
    echo_error: bool = False  # a `status` error's message quotes the prompt (as real upstreams may)
    blocked: str | None = None  # Gemini: "prompt" (promptFeedback) or "answer" (finishReason SAFETY)
    # Fields this request must not carry (comma-separated), answered 422 as Mistral does: shows
    # that a deployment's compat switches keep them out.
    reject_fields: str | None = None
    no_usage: bool = False  # OpenAI API: an answer without `usage` (as some compatible servers send)

    def without_failures(self) -> Markers:
        """These markers with the failure ones (status, drop, timeout, delay_ms, stream_*) cleared."""
        return dataclasses.replace(
            self,
            status=None,
            delay_ms=0.0,
            timeout=False,
            drop=False,
            stream_error_after=None,
            stream_drop_after=None,
        )


NO_MARKERS = Markers()
_INT_MARKERS = frozenset(
    {
        "status",
        "stream_error_after",
        "stream_drop_after",
        "words",
        "times",
        "huge_body_mb",
        "sse_no_newlines_mb",
    }
)
_STR_MARKERS = frozenset({"bad_body", "error_code", "blocked", "reject_fields"})
_FLOAT_MARKERS = frozenset({"retry_after", "delay_ms", "chunk_delay_ms"})
_FLAG_MARKERS = frozenset({"timeout", "drop", "echo_error", "no_usage"})


def parse_markers(text: str) -> Markers:
    """Read the markers in `text`; unknown keys and unparsable values are ignored."""
    if MARKER_PREFIX not in text:
        return NO_MARKERS
    values: dict[str, Any] = {}
    for key, value in MARKER_RE.findall(text):
        try:
            if key in _INT_MARKERS:
                values[key] = int(value)
            elif key in _FLOAT_MARKERS:
                values[key] = float(value)
            elif key in _FLAG_MARKERS:
                values[key] = True
            elif key in _STR_MARKERS:
                values[key] = value
        except ValueError:
            continue
    return Markers(**values) if values else NO_MARKERS


def strip_markers(text: str) -> str:
    return MARKER_RE.sub("", text) if MARKER_PREFIX in text else text


def random_id(length: int) -> str:
    """`length` random letters and digits (base64 of random bytes with `+` and `/` mapped away)."""
    return base64.b64encode(random.randbytes(length)).translate(_B64_TO_ALNUM)[:length].decode()


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        )
    return ""


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


def content_words(content: Any) -> int:
    """Approximate token count of message content (text parts and tool results)."""
    if isinstance(content, str):
        return len(content.split())
    total = 0
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            text = part.get("text")
            if isinstance(text, str):
                total += len(text.split())
            elif "content" in part:
                total += content_words(part["content"])
    return total


def prompt_tokens(messages: list[Any], system: Any = None) -> int:
    """Words in the messages plus 3 per message (and the system prompt's words)."""
    total = content_words(system)
    for message in messages:
        if isinstance(message, dict):
            total += content_words(message.get("content")) + 3
    return total


def generate_words(seed: bytes, index: int, echo: str, count: int | None) -> list[str]:
    """8-40 words (or exactly `count`), a function of `seed`, `index` and `echo` only."""
    digest = hashlib.blake2b(seed + index.to_bytes(4, "little"), digest_size=64).digest()
    if count is None:
        count = 8 + digest[0] % 33
    count = max(count, 0)
    echo_words = echo.split()[:6]
    words = (["Re:", *echo_words] if echo_words else [])[:count]
    pool = digest[1:]
    while len(words) < count:
        if not pool:
            digest = hashlib.blake2b(digest, digest_size=64).digest()
            pool = digest
        take = min(count - len(words), len(pool))
        words.extend(VOCAB[b & 63] for b in pool[:take])
        pool = pool[take:]
    return words


@dataclass(slots=True)
class Completion:
    """Generated text after the token limit and stop sequences were applied."""

    text: str
    tokens: int
    truncated: bool = False
    stop_sequence: str | None = None

    def pieces(self) -> list[str]:
        """Stream pieces, one per word, with the separating space leading; they join to `text`."""
        parts = self.text.split(" ")
        pieces = [parts[0], *(" " + part for part in parts[1:])]
        return pieces if pieces[0] else pieces[1:]


def complete(
    seed: bytes, index: int, echo: str, count: int | None, limit: int | None, stops: list[str]
) -> Completion:
    words = generate_words(seed, index, echo, count)
    truncated = limit is not None and len(words) > limit
    if limit is not None and truncated:
        words = words[: max(limit, 0)]
    text = " ".join(words)
    cut, matched = -1, None
    for stop in stops:
        pos = text.find(stop) if stop else -1
        if pos >= 0 and (cut < 0 or pos < cut):
            cut, matched = pos, stop
    if matched is not None:
        text = text[:cut]
        return Completion(text, len(text.split()), stop_sequence=matched)
    return Completion(text, len(words), truncated=truncated)


def string_list(value: Any) -> list[str]:
    """A `stop` / `stop_sequences` value as a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    arguments: str  # `input` as a JSON string

    @property
    def tokens(self) -> int:
        return max(1, len(self.arguments) // 4)

    def fragments(self, size: int = 8) -> list[str]:
        return [self.arguments[i : i + size] for i in range(0, len(self.arguments), size)]


def make_tool_call(id_: str, name: str, schema: Any, text: str) -> ToolCall:
    """A deterministic call whose arguments satisfy the tool's parameter schema (strings from `text`)."""
    args = instance(schema, text) if isinstance(schema, dict) else None
    if not isinstance(args, dict) or not args:  # no schema, or one that asks for nothing in particular
        args = {"query": text.strip()[:20]}
    return ToolCall(id_, name, args, encode(args).decode())
