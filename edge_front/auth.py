"""Client authentication, decided on the raw request path as received (never on a URL rebuilt
from the Host header), with keys compared in constant time."""

from __future__ import annotations

import hmac

from shared.errors import error_body

OPEN_PATHS = frozenset({b"/health", b"/health/live", b"/health/ready", b"/metrics"})
UNAUTHORIZED_BODY = error_body(
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


def is_master(key: bytes, master_key: bytes) -> bool:
    return hmac.compare_digest(key, master_key)


def refused_body(reason: str) -> bytes:
    """A 401 that says why ("unknown key", "key blocked", ...), never which part was wrong."""
    return error_body(401, f"Invalid API key: {reason}.")


FORBIDDEN_ADMIN_BODY = error_body(403, "Only the master key may use the admin API.")
KEYS_LOADING_BODY = error_body(503, "The gateway has not loaded its virtual keys yet; retry shortly.")
