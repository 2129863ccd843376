"""shared.redact: every kind is replaced, and the look-alikes a log is full of are not."""

from __future__ import annotations

import pytest

from shared.redact import luhn_ok, redact


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("jane.doe+tag@example.co.uk", "email"),
        ("J_D-99@mail-server.example", "email"),
        ("+14155552671", "phone"),
        ("+1 (415) 555-2671", "phone"),
        ("+44 20 7946 0958", "phone"),
        ("(415) 555-2671", "phone"),
        ("415-555-2671", "phone"),
        ("415.555.2671", "phone"),
        ("4111 1111 1111 1111", "card"),
        ("4111-1111-1111-1111", "card"),
        ("4111111111111111", "card"),
        ("378282246310005", "card"),  # Amex, 15 digits
        ("6011000990139424", "card"),
        ("123-45-6789", "ssn"),
        ("192.168.1.20", "ip"),
        ("10.0.0.1", "ip"),
        ("2001:0db8:85a3:0000:0000:8a2e:0370:7334", "ip"),
        ("2001:db8::1", "ip"),
        ("fe80::1ff:fe23:4567:890a", "ip"),
        ("::1", "ip"),
        ("Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "bearer"),
        ("bearer abcdefgh12345678", "bearer"),
        ("sk-proj-AbCdEf0123456789xyz", "api_key"),
        ("sk-ant-api03-AbCdEf0123456789_xyz-QQ", "api_key"),
        ("sk-edge-3f9c12ab45de67f0-Zm9vYmFyYmF6cXV4", "api_key"),
        ("sk-edge-test-key", "api_key"),
        ("AKIAIOSFODNN7EXAMPLE", "api_key"),
    ],
)
def test_each_kind_is_replaced_alone_and_inside_text(text: str, kind: str) -> None:
    assert redact(text) == f"[REDACTED:{kind}]"
    assert redact(f"before {text}, after") == f"before [REDACTED:{kind}], after"


@pytest.mark.parametrize(
    "text",
    [
        "version 1.2.3",
        "request req_abc123 answered 200",
        "request req_3fa9c1d2e4b5a0 answered 502 in 12.5 ms",
        "job 4111111111111112 is not a card",  # 16 digits failing Luhn
        "2026-11-28T22:03:15.123Z",
        "2026-11-28 22:03:15,123",
        "at unix time 1764367395.123456",
        "read 10485760 bytes, 64 MiB",
        "deployment gpt-4o#0 on openai:*",
        "key 3f9c12ab45de67f0 (team-a)",
        "worker host-1234-ab12cd",
        "MAC 00:1a:2b:3c:4d:5e",
        "std::vector and Class::method",
        "task-1234567890 and disk-usage",
        "missing Bearer token",
        "user @ host and a@b",
        "12:30 or 22:03:15",
        "a 5-digit zip 94107 and order #123-456",
        "1.2.3.4.5 is not an address",
        "",
    ],
)
def test_near_misses_stay(text: str) -> None:
    assert redact(text) == text


def test_ports_and_brackets_keep_what_is_not_the_address() -> None:
    # Decided: an address is redacted even on loopback; the port stays (it says which service).
    assert redact("listening on 127.0.0.1:8080") == "listening on [REDACTED:ip]:8080"
    assert redact("peer [2001:db8::7]:443 closed") == "peer [[REDACTED:ip]]:443 closed"


def test_several_kinds_in_one_text() -> None:
    text = "from bob@example.com (+1 415 555 2671) card 4242 4242 4242 4242 key sk-abcdef123456 via 10.1.2.3"
    assert redact(text) == (
        "from [REDACTED:email] ([REDACTED:phone]) card [REDACTED:card] "
        "key [REDACTED:api_key] via [REDACTED:ip]"
    )


def test_a_bearer_header_hides_the_whole_token_it_carries() -> None:
    assert redact("Authorization: Bearer sk-edge-abc-def123456") == "Authorization: [REDACTED:bearer]"


def test_luhn() -> None:
    assert luhn_ok("4111111111111111")
    assert luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")
    assert not luhn_ok("79927398710")


def test_text_without_any_trigger_is_returned_as_is() -> None:
    text = "reply stream read failed (ConnectionError); retrying"
    assert redact(text) is text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("card 4111 1111 1111 1111 4dd8 end", "card [REDACTED:card] 4dd8 end"),
        ("qty 1 4111 1111 1111 1111", "qty 1 [REDACTED:card]"),
        ("4111-1111-1111-1111-7 left", "[REDACTED:card]-7 left"),
    ],
)
def test_a_card_run_together_with_other_digits_is_still_found(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_a_long_number_is_not_cut_into_a_card_where_it_has_no_separators() -> None:
    # 4111111111111111 passes Luhn, but inside 17 unbroken digits it is an id, not a card.
    assert redact("id 41111111111111112") == "id 41111111111111112"
