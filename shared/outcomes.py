"""Recent job outcomes: a capped Redis stream per provider (`keyspace.outcomes`).

Workers append one entry per job in the pipeline that already publishes the job's final answer
(edge_workers/publishing.py), so it costs no round trip; the operator dashboard reads the last
minute of it for throughput, error rate and latency, and its failures for the "recent failed
jobs" list. An entry holds no prompt text: the error message is the one the client got, run
through `shared.redact.redact` and cut short.
"""

from __future__ import annotations

import msgspec

from shared.redact import redact
from shared.wire import ErrorEnvelope

# About a thousand jobs per provider: more than a minute of a busy pool is not needed for the
# dashboard's numbers, and XADD MAXLEN ~ trims in whole radix-tree nodes (cheap).
OUTCOMES_MAXLEN = 1000
MAX_MESSAGE_CHARS = 200
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


class JobOutcome(msgspec.Struct, frozen=True):
    """One job's end, as the dashboard shows it."""

    time_ms: int  # unix ms when the worker published the answer
    request_id: str
    model: str  # the upstream model
    deployment: str
    status: int
    latency_ms: float  # the upstream attempt's (first byte of a stream); -1: unknown
    message: str = ""  # redacted and truncated error message; empty for a success


def error_message(body: bytes) -> str:
    """The error envelope's message, redacted before it is cut (half a card number is still a
    leak); what the body is otherwise, never the body itself."""
    try:
        detail = _decode_error(body).error
    except msgspec.DecodeError:
        return f"no error envelope ({len(body)} bytes)"
    message = redact(detail.message)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    return message


def entry(
    now_ms: int, request_id: str, model: str, deployment: str, status: int, latency_ms: float, body: bytes
) -> dict[bytes, bytes]:
    """The stream fields of one outcome; the message only for a failure."""
    fields = {
        b"t": str(now_ms).encode(),
        b"r": request_id.encode(),
        b"m": model.encode(),
        b"d": deployment.encode(),
        b"s": str(status).encode(),
        b"l": f"{latency_ms:.1f}".encode(),
    }
    if status >= 400:
        fields[b"e"] = error_message(body).encode()
    return fields


def parse(fields: dict[bytes, bytes]) -> JobOutcome | None:
    """An entry read back; None for one this version cannot read (never an exception: a
    malformed entry must not break the dashboard)."""
    try:
        return JobOutcome(
            time_ms=int(fields[b"t"]),
            request_id=fields[b"r"].decode(),
            model=fields[b"m"].decode(),
            deployment=fields[b"d"].decode(),
            status=int(fields[b"s"]),
            latency_ms=float(fields[b"l"]),
            message=fields.get(b"e", b"").decode(errors="replace"),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
