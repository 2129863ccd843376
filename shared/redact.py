"""PII and secrets out of log text: each match becomes `[REDACTED:<kind>]`.

Kinds: email, phone, card, ssn, ip, bearer, api_key. Applied by the log formatters
(`shared.logs`) to every record's message, exception text and string fields, so no call site
has to remember it. One alternation compiled once, one pass per text; text that cannot hold any
of the kinds (no digit, no '@', no 'sk-', 'AKIA', 'Bearer' or '::') skips the regex altogether.

Decisions (tests/unit/test_redact.py pins them):
- IP addresses are redacted wherever they appear, loopback and private ranges included
  (`127.0.0.1:8080` becomes `[REDACTED:ip]:8080`): telling a harmless address from a client's
  would need context the formatter does not have. A four-part version string (`1.2.3.4`) is an
  IPv4 address to this module; three parts (`1.2.3`) stay.
- Card numbers are 13-19 digits (spaces or dashes between them allowed) that pass the Luhn
  check; a long number failing it (an id, a count) stays as it is. A 13-digit millisecond
  timestamp that happens to pass the check (one in ten) is redacted too: the price of not
  missing a card.
- A bearer token is `Bearer` followed by at least 8 token characters ("Bearer token" stays).
- Phone numbers need a leading `+` (8-15 digits, E.164) or the North American
  `(415) 555-2671` / `415-555-2671` / `415.555.2671` shape: a bare run of digits is not a phone
  number, so unix timestamps, byte counts and latencies stay.
- An IPv6 address written only with letters (`fe::ab`) and no '::' is not noticed by the fast
  path; every address with a digit or a '::' is.
"""

from __future__ import annotations

import re

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_H16 = r"[0-9A-Fa-f]{1,4}"

_PATTERNS: dict[str, str] = {
    # Secrets first: a key or token can contain what would otherwise look like a phone number.
    "bearer": r"\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{8,}",
    "api_key": r"\bsk-[A-Za-z0-9_-]{6,}|\bAKIA[0-9A-Z]{16}\b",
    "email": r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}",
    "ssn": r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])",
    "card": r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w.-]?\d)",
    "ip": (
        # IPv6: eight groups, or a '::' with groups on either side (at least one somewhere);
        # not inside a longer token of hex digits and colons (so `22:03:15` never matches).
        rf"(?<![\w:.])(?:(?:{_H16}:){{7}}{_H16}"
        rf"|(?:{_H16}:){{1,7}}:(?:{_H16}(?::{_H16}){{0,6}})?"
        rf"|::{_H16}(?::{_H16}){{0,6}})(?![\w:])"
        # IPv4: four octets, not part of a longer dotted run (`1.2.3.4.5` is something else).
        rf"|(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)"
    ),
    "phone": (
        r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){7,14}(?!\w)"
        r"|(?<![\w(+-])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"
    ),
}
_REGEX = re.compile("|".join(f"(?P<{kind}>{pattern})" for kind, pattern in _PATTERNS.items()))
# The fast path: text none of the patterns can match (most log lines) is returned untouched.
_MAY_MATCH = re.compile(r"[0-9@]|sk-|AKIA|[Bb]earer|::")
_REPLACEMENT = {kind: f"[REDACTED:{kind}]" for kind in _PATTERNS}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _replace(match: re.Match[str]) -> str:
    kind = match.lastgroup or ""
    if kind == "card":
        digits = re.sub(r"\D", "", match.group())
        if not luhn_ok(digits):
            return match.group()  # an id or a count, not a card
    return _REPLACEMENT[kind]


def redact(text: str) -> str:
    """`text` with every email, phone, card, ssn, ip, bearer token and API key replaced."""
    if _MAY_MATCH.search(text) is None:
        return text
    return _REGEX.sub(_replace, text)
