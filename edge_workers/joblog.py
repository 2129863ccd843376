"""What a worker's log lines say about a job: its request's fields and, for a failure, why.

A failed job's line names the status and the error's type and message as the client gets them
(the formatter redacts them: an upstream error can echo the prompt), so "answered 400" comes
with its reason.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from shared.queue import Job
from shared.redact import redact
from shared.wire import ErrorEnvelope

log = logging.getLogger("edge.worker")
# An upstream's message can be long (a schema dump, the prompt it refused): the start says why.
MAX_MESSAGE_CHARS = 300
_decode_error = msgspec.json.Decoder(ErrorEnvelope).decode


def job_fields(job: Job, **more: Any) -> dict[str, Any]:
    """The request fields of a job's log lines (`extra=`); the key by its public id only."""
    return {
        "request_id": job.request_id,
        "key_id": job.key_id,
        "provider": job.provider,
        "deployment": job.deployment_id,
        "model": job.upstream_model,
        **more,
    }


def error_summary(body: bytes) -> str:
    """`type: message` of an error envelope in OpenAI's shape; what the body is otherwise."""
    try:
        detail = _decode_error(body).error
    except msgspec.DecodeError:
        return f"no error envelope ({len(body)} bytes)"
    message = redact(detail.message)  # before it is cut: half a card number is still a leak
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS] + "..."
    code = f" ({detail.code})" if detail.code else ""
    return f"{detail.type}{code}: {message}"


def log_failure(job: Job, status: int, body: bytes, latency_ms: float | None = None) -> None:
    """One line for a job answered with an error: a warning for 5xx (the gateway's or the
    upstream's trouble), info for 4xx (the client's request)."""
    log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "request %s: answered %d, %s",
        job.request_id,
        status,
        error_summary(body),
        extra=job_fields(job, status=status, latency_ms=latency_ms),
    )
