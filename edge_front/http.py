"""Plain ASGI request and response helpers for the front's hot path.

The chat endpoint is a raw ASGI handler rather than a Starlette endpoint: measured on this
machine, Starlette's Request/Response wrapping and middleware stack cost more CPU per request
than the whole cache lookup, and an L1 hit is nothing but that overhead plus a dict lookup.
"""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from shared.errors import EdgeError

JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientDisconnected(Exception):
    """The client went away before its request body arrived."""


def header_map(scope: Scope) -> dict[bytes, bytes]:
    """Request headers by lower-case name (ASGI servers already lower-case them)."""
    return dict(scope["headers"])


def request_id_of(headers: dict[bytes, bytes]) -> str | None:
    """The client's x-request-id when it is sane."""
    given = headers.get(b"x-request-id")
    if given and len(given) <= 128:
        text = given.decode("latin-1")
        if text.isascii() and text.isprintable():
            return text
    return None


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EdgeError(413, f"Request body is larger than the {limit}-byte limit.")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise EdgeError(413, f"Request body is larger than the {limit}-byte limit.")
        if not message.get("more_body", False):
            if not chunks:
                return chunk
            chunks.append(chunk)
            return b"".join(chunks)
        chunks.append(chunk)


async def send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*JSON_HEADERS, (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})
