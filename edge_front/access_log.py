"""The access log: one line per chat request, written by the front when the request ends.

Off by default (`EDGE_ACCESS_LOG=true` turns it on; `EDGE_ACCESS_LOG_SAMPLE=0.1` keeps a tenth
of the lines): an L1 hit costs less CPU than formatting a line, so when it is off the request
pays for one boolean check in `edge_front.chat` and nothing else. The line goes to the
`edge.access` logger at INFO, shown whatever LOG_LEVEL says (the operator asked for it), in
LOG_FORMAT's format and redacted like every other line.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from shared.config import Settings

log = logging.getLogger("edge.access")


class RequestFacts:
    """What the metrics and the access line of one request say, filled in as it is understood."""

    __slots__ = (
        "attempts",
        "cache",
        "completion_tokens",
        "cost_usd",
        "deployment",
        "model",
        "prompt_tokens",
        "provider",
        "then",
        "tokens",
    )

    def __init__(self) -> None:
        self.provider = self.model = self.deployment = ""
        self.cache = "none"
        self.attempts = self.tokens = self.prompt_tokens = self.completion_tokens = 0
        self.cost_usd = 0.0
        # Work the response need not wait for (the L1 write), done once it is written.
        self.then: Callable[[], object] | None = None


def configure(settings: Settings) -> None:
    """At start: let the access lines through when they are on."""
    if settings.access_log:
        log.setLevel(logging.INFO)


def write(
    settings: Settings,
    request_id: str,
    key_id: str | None,
    facts: RequestFacts,
    status: int,
    latency_ms: float,
) -> None:
    """One access line (or none, when sampling leaves this request out)."""
    if settings.access_log_sample < 1.0 and random.random() >= settings.access_log_sample:
        return
    log.info(
        "request %s: %d in %.1f ms",
        request_id,
        status,
        latency_ms,
        extra={
            "request_id": request_id,
            "key_id": key_id,
            "provider": facts.provider or None,  # unknown until the model is routed
            "model": facts.model or None,
            "deployment": facts.deployment or None,
            "cache": facts.cache,
            "status": status,
            "latency_ms": round(latency_ms, 3),
            "tokens": facts.tokens,
            "cost_usd": facts.cost_usd,
            "attempt": facts.attempts,
        },
    )
