"""Small HTTP helpers shared by the front's endpoints: body reading, request ids, JSON answers."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from shared.errors import EdgeError


def request_id_of(request: Request, new_id: Callable[[], str]) -> str:
    """The client's x-request-id when it is sane, else a new one."""
    given = request.headers.get("x-request-id")
    if given and len(given) <= 128 and given.isascii() and given.isprintable():
        return given
    return "req_" + new_id()


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise EdgeError(413, f"Request body is larger than the {limit}-byte limit.")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise EdgeError(413, f"Request body is larger than the {limit}-byte limit.")
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(body: bytes, status: int, headers: dict[str, str]) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def error_response(error: EdgeError, request_id: str) -> Response:
    headers = {"x-request-id": request_id, **error.headers}
    return json_response(error.body(), error.status, headers)
