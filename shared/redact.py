"""PII and secrets out of log text: each match becomes `[REDACTED:<kind>]`.

Kinds: email, phone, card, ssn, ip, bearer, api_key. Applied by the log formatters
(`shared.logs`) to every record's message, exception text and string fields, so no call site
has to remember it. One compiled regex per kind, run only on text that can hold it; text that
cannot hold any of the kinds (no digit, no '@', no 'sk-', 'AKIA', 'Bearer' or '::') skips
the regexes altogether.

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

# One regex per kind, each tried only when the text holds what it needs (a literal search is far
# cheaper than a regex pass): measured, one alternation of all kinds was three times slower.
# The order matters: secrets first (a key can hold what looks like a phone number), SSNs and
# cards before phones, IP addresses before phones.
_BEARER = re.compile(r"\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{8,}")
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{6,}|\bAKIA[0-9A-Z]{16}\b")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# IPv6: eight groups, or a '::' with groups on either side (at least one somewhere); not inside
# a longer token of hex digits and colons (so `22:03:15` never matches).
_IPV6 = re.compile(
    rf"(?<![\w:.])(?:(?:{_H16}:){{7}}{_H16}"
    rf"|(?:{_H16}:){{1,7}}:(?:{_H16}(?::{_H16}){{0,6}})?"
    rf"|::{_H16}(?::{_H16}){{0,6}})(?![\w:])"
)
_SSN = re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])")
_CARD = re.compile(r"(?<![\w.+-])\d(?:[ -]?\d){12,18}(?![\w.-]?\d)")
# IPv4: four octets, not part of a longer dotted run (`1.2.3.4.5` is something else).
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_PHONE = re.compile(
    r"(?<![\w+])\+\d(?:[ .()-]{0,2}\d){7,14}(?!\w)"
    r"|(?<![\w(+-])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-])"
)
_DIGIT = re.compile(r"\d")
# The fast path: text none of the patterns can match (most log lines) is returned untouched.
_MAY_MATCH = re.compile(r"[0-9@]|sk-|AKIA|[Bb]earer|::")
_CARD_REPLACEMENT = "[REDACTED:card]"


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        d = ord(char) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    run = match.group()
    if luhn_ok(re.sub(r"\D", "", run)):
        return _CARD_REPLACEMENT
    # A card next to other digits (`4111 1111 1111 1111 4dd8`): the greedy run fails Luhn as a
    # whole, so try its parts that start and end at the run's own separators, longest first.
    # Only at separators: any 13-19 digits of a random id pass Luhn one time in ten.
    starts = [0] + [i + 1 for i, c in enumerate(run) if c in " -"]
    ends = [i for i, c in enumerate(run) if c in " -"] + [len(run)]
    spans = sorted(((a, b) for a in starts for b in ends if a < b), key=lambda ab: ab[0] - ab[1])
    for a, b in spans:
        digits = run[a:b].replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            return run[:a] + _CARD_REPLACEMENT + run[b:]
    return run  # failing Luhn: an id, a count


def redact(text: str) -> str:
    """`text` with every email, phone, card, ssn, ip, bearer token and API key replaced."""
    if _MAY_MATCH.search(text) is None:
        return text
    if "earer" in text:
        text = _BEARER.sub("[REDACTED:bearer]", text)
    if "sk-" in text or "AKIA" in text:
        text = _API_KEY.sub("[REDACTED:api_key]", text)
    if "@" in text:
        text = _EMAIL.sub("[REDACTED:email]", text)
    if "::" in text or text.count(":") >= 7:
        text = _IPV6.sub("[REDACTED:ip]", text)
    if _DIGIT.search(text) is not None:
        text = _SSN.sub("[REDACTED:ssn]", text)
        text = _CARD.sub(_card, text)
        text = _IPV4.sub("[REDACTED:ip]", text)
        text = _PHONE.sub("[REDACTED:phone]", text)
    return text
