"""Dashboard sessions: signed, expiring, bound to the master key, with a CSRF token per session."""

from __future__ import annotations

from edge_front.dashboard.session import (
    COOKIE_NAME,
    SessionSigner,
    cookie_from,
    cookie_header,
)

NOW = 1_800_000_000.0


def test_a_session_verifies_until_it_expires() -> None:
    signer = SessionSigner("sk-master", ttl_s=60)
    value, session = signer.issue(NOW)
    assert signer.verify(value, NOW) == session
    assert signer.verify(value, NOW + 59) == session
    assert signer.verify(value, NOW + 60) is None  # expired


def test_every_front_with_the_same_master_key_accepts_it_and_no_other_key_does() -> None:
    value, session = SessionSigner("sk-master").issue(NOW)
    assert SessionSigner("sk-master").verify(value, NOW) == session  # another process
    assert SessionSigner("sk-other").verify(value, NOW) is None  # the master key changed


def test_a_tampered_or_malformed_cookie_is_refused() -> None:
    signer = SessionSigner("sk-master", ttl_s=60)
    value, _ = signer.issue(NOW)
    payload, mac = value.split(".")
    # A longer expiry signed by someone without the key.
    forged_payload = SessionSigner("sk-attacker", ttl_s=10**6).issue(NOW)[0].split(".")[0]
    for bad in (
        f"{forged_payload}.{mac}",
        f"{payload}.{mac[:-2]}AA",
        payload,
        f"{payload}.{mac}.x",
        "",
        None,
        "!!!.???",
        "a" * 600,
    ):
        assert signer.verify(bad, NOW) is None, bad


def test_the_csrf_token_belongs_to_its_session() -> None:
    signer = SessionSigner("sk-master")
    _, one = signer.issue(NOW)
    _, two = signer.issue(NOW)
    token = signer.csrf_token(one).encode()
    assert signer.csrf_ok(one, token)
    assert not signer.csrf_ok(two, token)  # another session's token
    assert not signer.csrf_ok(one, None)
    assert not signer.csrf_ok(one, token[:-1])
    assert SessionSigner("sk-other").csrf_token(one) != token.decode()


def test_sign_in_compares_against_the_master_key_only() -> None:
    signer = SessionSigner("sk-master")
    assert signer.is_master("sk-master")
    assert not signer.is_master("sk-maste")
    assert not signer.is_master("sk-edge-0123456789abcdef-secret")  # a virtual key
    assert not signer.is_master("")


def test_the_cookie_is_httponly_strict_and_secure_over_https() -> None:
    plain = cookie_header("v", 60, secure=False).decode()
    assert plain == f"{COOKIE_NAME}=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
    assert cookie_header("v", 60, secure=True).decode().endswith("; Secure")


def test_the_cookie_is_read_from_among_others() -> None:
    headers = [(b"cookie", b"a=1; " + COOKIE_NAME.encode() + b"=abc.def; b=2"), (b"host", b"x")]
    assert cookie_from(headers) == "abc.def"
    assert cookie_from([(b"cookie", b"a=1")]) is None
