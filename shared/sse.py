"""Server-sent events: an incremental parser for upstream streams, and the frame writer.

Hand-written on purpose: the maintained SSE parsers are tied to another HTTP client (httpx-sse
exposes its decoder only as a private module) or unmaintained for aiohttp, while the format is
twenty lines of the WHATWG spec: `field: value` lines, events end at a blank line.
"""

from __future__ import annotations

from collections.abc import Iterator


class SSEParser:
    """Feed it lines (with or without their line ending); it yields complete (event, data) pairs."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[bytes] = []
        self._partial = b""

    def feed_bytes(self, data: bytes) -> Iterator[tuple[str, bytes]]:
        """Feed raw bytes as they arrive from the network, split anywhere."""
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            yield from self.feed(line)

    def feed(self, line: bytes) -> Iterator[tuple[str, bytes]]:
        line = line.rstrip(b"\r\n")
        if not line:
            if self._data:
                event, data = self._event, b"\n".join(self._data)
                self._event, self._data = "", []
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
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        # `id` and `retry` matter only to reconnecting browsers.

    def flush(self) -> Iterator[tuple[str, bytes]]:
        """The last event, if the stream ended without its closing blank line."""
        if self._partial:
            partial, self._partial = self._partial, b""
            yield from self.feed(partial)
        yield from self.feed(b"")


def frame(data: bytes) -> bytes:
    """One `data:` event as OpenAI sends them."""
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"
