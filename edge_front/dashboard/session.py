"""Dashboard sessions: a signed, expiring cookie set by signing in with the master key.

The cookie is `<payload>.<mac>` (both base64url), the payload a msgpack `Session`. The HMAC key
is derived from the master key, not drawn at random per process: any front process of the
cluster accepts a session another one issued, and changing the master key ends every session.
Nothing is stored server-side, so a session cannot be revoked before it expires except by
changing the master key; sessions are short for that reason (`SESSION_TTL_S`).

The CSRF token is derived from the session id with the same key: a page that holds the
session's token proves it was served by us to that session, and a cross-site form cannot set
the header it travels in (SameSite=Strict keeps the cookie off cross-site requests as well).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time

import msgspec

COOKIE_NAME = "edge_dashboard"
CSRF_HEADER = b"x-csrf-token"
SESSION_TTL_S = 8 * 3600  # a working day; re-sign-in after that
_CONTEXT = b"llm-edge-agent dashboard session v1"


class Session(msgspec.Struct, frozen=True, array_like=True):
    session_id: str  # random, names the operator in the action log ("session:<first 8>")
    expires: int  # unix time

    @property
    def actor(self) -> str:
        return f"session:{self.session_id[:8]}"


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Session).decode


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionSigner:
    def __init__(self, master_key: str, ttl_s: int = SESSION_TTL_S) -> None:
        # A key of its own (never the master key itself): a leaked cookie MAC says nothing
        # about the master key, and the derivation is fixed so every front derives the same.
        self._key = hmac.new(master_key.encode(), _CONTEXT, hashlib.sha256).digest()
        self._master = master_key.encode()
        self.ttl_s = ttl_s

    def is_master(self, presented: str) -> bool:
        """The sign-in check, in constant time."""
        return hmac.compare_digest(presented.encode(), self._master)

    def _mac(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def issue(self, now: float | None = None) -> tuple[str, Session]:
        """A new session and its cookie value."""
        now = time.time() if now is None else now
        session = Session(secrets.token_hex(16), int(now) + self.ttl_s)
        payload = _encode(session)
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", session

    def verify(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session a cookie holds, if we signed it and it has not expired."""
        if not cookie or cookie.count(".") != 1 or len(cookie) > 512:
            return None
        payload_text, mac_text = cookie.split(".")
        try:
            payload, mac = _unb64(payload_text), _unb64(mac_text)
        except (ValueError, binascii.Error):
            return None
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            session = _decode(payload)
        except msgspec.DecodeError:
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def csrf_token(self, session: Session) -> str:
        return _b64(self._mac(b"csrf:" + session.session_id.encode()))

    def csrf_ok(self, session: Session, presented: bytes | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf_token(session).encode())


def cookie_header(value: str, max_age: int, secure: bool) -> bytes:
    """Set-Cookie for the session: HttpOnly (no script reads it), SameSite=Strict (no other
    site's request carries it), Path=/ (the page and /admin/* both need it), Secure over HTTPS."""
    parts = [f"{COOKIE_NAME}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts).encode()


def cookie_from(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The session cookie's value from a request's Cookie headers."""
    for name, value in headers:
        if name != b"cookie":
            continue
        for part in value.decode("latin-1").split(";"):
            key, _, val = part.strip().partition("=")
            if key == COOKIE_NAME:
                return val
    return None
