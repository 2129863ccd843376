"""Server-sent events: an incremental parser for upstream streams, and the frame writer.

Hand-written on purpose: the maintained SSE parsers are tied to another HTTP client (httpx-sse
exposes its decoder only as a private module) or unmaintained for aiohttp, while the format is
twenty lines of the WHATWG spec: `field: value` lines, events end at a blank line.
"""

from __future__ import annotations

from collections.abc import Iterator


class EventTooLarge(ValueError):
    """A line or event longer than the parser's limit: the stream is broken or hostile."""


class SSEParser:
    """Feed it lines (with or without their line ending); it yields complete (event, data) pairs.

    Memory is bounded: a line, and an event's data, longer than `max_line_bytes` raises
    EventTooLarge. A line that arrives in many reads is joined once, when it ends, so a stream
    without line breaks costs linear time, not quadratic.
    """

    def __init__(self, max_line_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_line_bytes = max_line_bytes
        self._event = ""
        self._data: list[bytes] = []
        self._data_size = 0
        self._partial: list[bytes] = []  # the pieces of an unfinished line
        self._partial_size = 0

    def feed_bytes(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        """Feed raw bytes as they arrive from the network, split anywhere."""
        if b"\n" not in data:
            self._keep_partial(data)
            return
        if self._partial:
            data = b"".join(self._partial) + data
            self._partial.clear()
            self._partial_size = 0
        lines = data.split(b"\n")
        self._keep_partial(lines.pop())
        for line in lines:
            if len(line) > self.max_line_bytes:
                raise EventTooLarge(f"a stream line is longer than {self.max_line_bytes} bytes")
            yield from self.feed(line)

    def _keep_partial(self, piece: bytes) -> None:
        if not piece:
            return
        self._partial.append(piece)
        self._partial_size += len(piece)
        if self._partial_size > self.max_line_bytes:
            raise EventTooLarge(f"a stream line is longer than {self.max_line_bytes} bytes")

    def feed(self, line: bytes) -> Iterator[tuple[str, bytes]]:
        line = line.rstrip(b"\r\n")
        if not line:
            if self._data:
                event, data = self._event, b"\n".join(self._data)
                self._event, self._data, self._data_size = "", [], 0
                yield event, data
            else:
                self._event = ""
            return
        if line.startswith(b":"):  # a comment, used by servers as keep-alive
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data_size += len(value)
            if self._data_size > self.max_line_bytes:
                raise EventTooLarge(f"a stream event is longer than {self.max_line_bytes} bytes")
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # `id` and `retry` matter only to reconnecting browsers.

    def flush(self) -> Iterator[tuple[str, bytes]]:
        """The last event, if the stream ended without its closing blank line."""
        if self._partial:
            partial = b"".join(self._partial)
            self._partial.clear()
            self._partial_size = 0
            yield from self.feed(partial)
        yield from self.feed(b"")


def frame(data: bytes) -> bytes:
    """One `data:` event as OpenAI sends them."""
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"
