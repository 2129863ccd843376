"""Client authentication: a pure ASGI middleware (no per-request Request object).

The decision is made on the raw request path as received, never on a URL rebuilt from the Host
header, and keys are compared in constant time.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.errors import error_body

OPEN_PATHS = frozenset({b"/health", b"/health/live", b"/health/ready", b"/metrics"})
_UNAUTHORIZED = error_body(
    401, "Missing or invalid API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'."
)


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
        elif name == b"x-api-key":
            return value.strip()
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, master_key: str) -> None:
        self.app = app
        self.master_key = master_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.partition(b"?")[0]
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = presented_key(scope["headers"])
        if key is not None and hmac.compare_digest(key, self.master_key):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
