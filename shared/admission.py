"""A virtual key's limits and budget, checked and charged by the script that enqueues the
request's job (shared/miss_script.py): exact across any number of fronts, at no extra round trip.

Only requests that go upstream count: a cache hit never reaches this. Requests without a key
(the master key) and keys without limits or a budget skip these checks.

- Requests per minute: a fixed window (`EDGE_KEY_WINDOW_S`, 60 s by default, aligned to the
  clock), one counter per key and window (`edge:krpm:<key_id>:<window>`) that expires after its
  window. A fixed window is exact and O(1); it allows up to twice the limit across a boundary
  (LiteLLM's limiter has the same property).
- In-flight requests: a sorted set per key (`edge:kpar:<key_id>`) of slot ids scored by when the
  slot expires on its own (the request's deadline plus the job key's grace), so a slot whose
  job vanished (a front or worker that died, a lost reply) frees itself; expired members are
  pruned by every check. The worker's final publication, the worker's drop of an expired or
  cancelled job, and the front's cancel remove the slot. `max_parallel_requests` caps its size.
- Tokens per minute and the budget: a request reserves its estimated tokens and their
  worst-case cost (edge_front/reservation.py) in its slot itself, `<job id>:<tokens>:<usd>`
  (the job carries that string), so the reservation goes wherever the slot goes and costs no
  structure of its own. It is admitted while the window's used tokens
  (`edge:ktpm:<key_id>:<window>`) plus every reservation stay under `tpm_limit`, and while the
  period's spend (`edge:kspend:<key_id>:<period>`) plus every reservation stays under
  `max_budget`. The worker that publishes the answer books the real tokens and cost
  (edge_workers/publishing.py) and drops the reservation, in the same round trip. So N
  concurrent requests can overshoot a budget by at most one request's reservation, as long as
  answers cost no more than reserved (a client that sets no max_tokens is reserved the
  configured default; a longer answer is booked in full).

A client request is charged once however many attempts (retries, failover, fallbacks) it takes,
as LiteLLM counts it: its first attempt runs the check and charges; later attempts enqueue
without a check and take the same slot (and reservation) again (the slot id is the first job's
id). The worker's answer to a failed attempt releases the slot, so between that answer and the
retry's enqueue (the backoff) another request may take it: only then can a key briefly have one
more request in flight than its limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.errors import EdgeError
from shared.queue import (
    KeyCharge,
)


@dataclass
class KeyLimits:
    """One request's key limits, and what its admission found (shared by all its attempts)."""

    key_id: str
    name: str  # the alias, else the public id: what a refusal names (never the key)
    rpm: int | None
    parallel: int | None
    window_s: int = 60
    tpm: int | None = None
    budget: float | None = None  # USD in the current budget period
    charge: KeyCharge = field(default_factory=KeyCharge)  # where the worker books the usage
    # What the request reserves at admission (set by the front before the first attempt).
    reserve_tokens: int = 0  # its prompt, estimated, and the most its answer may hold
    reserve_usd: float = 0.0  # those tokens at the first deployment's prices: its worst case
    slot: str | None = None  # the in-flight slot (with what it reserves), once admitted
    admitted: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # OpenAI's x-ratelimit-*

    @property
    def reserves(self) -> bool:
        """Whether admission reserves tokens and cost (the key has a tpm limit or a budget)."""
        return self.tpm is not None or self.budget is not None

    @property
    def holds_slot(self) -> bool:
        return self.parallel is not None or self.reserves


def window_bounds(now: float, window_s: int) -> tuple[int, float]:
    """(index of the window holding `now`, unix time it ends)."""
    index = int(now // window_s)
    return index, (index + 1) * window_s


def rate_headers(limit: int, count: int, reset_s: float, unit: str = "requests") -> list[tuple[bytes, bytes]]:
    return [
        (f"x-ratelimit-limit-{unit}".encode(), str(limit).encode()),
        (f"x-ratelimit-remaining-{unit}".encode(), str(max(0, limit - count)).encode()),
        (f"x-ratelimit-reset-{unit}".encode(), f"{max(1, math.ceil(reset_s))}s".encode()),
    ]


def settle(
    limits: KeyLimits, verdict: int, count: int, tokens: int, spent: float, first: bool, reset_s: float
) -> None:
    """Act on the admission's verdict (shared/miss_script.py): raise its refusal, or note the key
    admitted, with OpenAI's x-ratelimit-* headers for its first attempt's answer."""
    if verdict == 1:
        assert limits.rpm is not None
        raise _rate_refusal(
            limits, "requests per minute", f"rpm_limit {limits.rpm}", limits.rpm, count, reset_s
        )
    if verdict == 2:
        assert limits.parallel is not None
        raise _parallel_refusal(limits, limits.parallel, count, reset_s)
    if verdict == 3:
        assert limits.tpm is not None
        raise _rate_refusal(
            limits, "tokens per minute", f"tpm_limit {limits.tpm}", limits.tpm, tokens, reset_s, "tokens"
        )
    if verdict == 4:
        assert limits.budget is not None
        raise _budget_refusal(limits, limits.budget, spent)
    limits.admitted = True
    if first:
        if limits.rpm is not None:
            limits.headers.extend(rate_headers(limits.rpm, count, reset_s))
        if limits.tpm is not None:
            limits.headers.extend(rate_headers(limits.tpm, tokens, reset_s, "tokens"))


def _header_dict(pairs: list[tuple[bytes, bytes]]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in pairs}


def _rate_refusal(
    limits: KeyLimits, what: str, setting: str, limit: int, count: int, reset_s: float, unit: str = "requests"
) -> EdgeError:
    wait = max(1, math.ceil(reset_s))
    return EdgeError(
        429,
        f"Rate limit reached for key '{limits.name}': {what} ({setting}); retry in {wait} s.",
        code="rate_limit_exceeded",
        headers={"retry-after": str(wait), **_header_dict(rate_headers(limit, count, reset_s, unit))},
    )


def _parallel_refusal(limits: KeyLimits, limit: int, count: int, reset_s: float) -> EdgeError:
    # The x-ratelimit-*-requests headers speak of requests per minute; a key without an rpm
    # limit gets its parallel limit there (none remaining, retry in a second).
    if limits.rpm is not None:
        rate = rate_headers(limits.rpm, count, reset_s)
    else:
        rate = rate_headers(limit, limit, 1)
    return EdgeError(
        429,
        f"Rate limit reached for key '{limits.name}': parallel requests (max_parallel_requests "
        f"{limit} already in flight); retry shortly.",
        code="rate_limit_exceeded",
        headers={"retry-after": "1", **_header_dict(rate)},
    )


def _budget_refusal(limits: KeyLimits, budget: float, spent: float) -> EdgeError:
    """OpenAI's answer to an exhausted quota (the SDK raises RateLimitError and, told
    `x-should-retry: false`, does not retry): waiting seconds will not help."""
    ends = limits.charge.period_ends
    if ends:
        when = datetime.fromtimestamp(ends, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        resets = f"it resets at {when}"
    else:
        resets = "it does not reset (the key has no budget_duration)"
    return EdgeError(
        429,
        f"Budget exceeded for key '{limits.name}': ${spent:.6f} spent or reserved of its "
        f"max_budget ${budget:g}; {resets}.",
        type_="insufficient_quota",
        code="budget_exceeded",
        headers={"x-should-retry": "false"},
    )
