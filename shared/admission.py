"""A virtual key's limits and budget, checked and charged in the round trip that enqueues the
request's job: exact across any number of fronts, at no extra round trip.

Only requests that go upstream count: a cache hit never reaches this. Requests without a key
(the master key) and keys without limits or a budget use `shared.queue.enqueue` unchanged.

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
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
from redis.asyncio import Redis

from shared import keyspace
from shared.arq_compat import JOB_KEY_PREFIX, serialize_job_data
from shared.errors import EdgeError
from shared.queue import (
    JOB_FUNCTION,
    JOB_KEY_GRACE_MS,
    USAGE_TTL_S,
    WAKE_STREAM_MAXLEN,
    Job,
    KeyCharge,
    arq_serialize,
    encode_job,
)

# KEYS: job key, queue, wake stream, rpm counter, in-flight set, deployment usage hash ('' none),
# tpm counter, spend hash.
# ARGV: job id, job data, job key ttl ms, now ms, wake maxlen, rpm limit ('' none), window reset
# ms (unix), parallel limit ('' none), slot ('' none: `<id>` or `<id>:<tokens>:<usd>`), slot
# expiry ms (unix), check ('1': first attempt), usage ttl s, tpm limit ('' none), budget USD
# ('' none), this request's reserved tokens.
# Returns {verdict, requests counted in the window, tokens counted in the window (used and
# reserved, this request's included), spend (used and reserved, as a string)}: verdict 0
# enqueued (and charged on a first attempt); refused (nothing written) 1 at the rpm limit, 2 at
# the parallel limit, 3 at the tpm limit, 4 over budget.
ADMIT_LUA = """
local rpm = tonumber(ARGV[6])
local par = tonumber(ARGV[8])
local tpm = tonumber(ARGV[13])
local budget = tonumber(ARGV[14])
local slot = ARGV[9]
local count, tokens, spent = 0, 0, 0
if slot ~= '' then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[4]) end
if ARGV[11] == '1' then
  if rpm then
    count = tonumber(redis.call('GET', KEYS[4]) or '0')
    if count >= rpm then return {1, count, 0, '0'} end
  end
  if par and redis.call('ZCARD', KEYS[5]) >= par then return {2, count, 0, '0'} end
  if tpm or budget then
    -- Every slot in flight names what it reserved: `<id>:<tokens>:<usd>`.
    local held_tokens, held_usd = 0, 0
    for _, member in ipairs(redis.call('ZRANGE', KEYS[5], 0, -1)) do
      local t, c = string.match(member, ':([^:]*):([^:]*)$')
      if t then
        held_tokens = held_tokens + tonumber(t)
        held_usd = held_usd + tonumber(c)
      end
    end
    if tpm then
      tokens = tonumber(redis.call('GET', KEYS[7]) or '0') + held_tokens
      if tokens >= tpm then return {3, count, tokens, '0'} end
      tokens = tokens + tonumber(ARGV[15])
    end
    if budget then
      spent = tonumber(redis.call('HGET', KEYS[8], 'spend') or '0') + held_usd
      if spent >= budget then return {4, count, tokens, tostring(spent)} end
    end
  end
  if rpm then
    count = redis.call('INCR', KEYS[4])
    redis.call('PEXPIREAT', KEYS[4], ARGV[7] + 1000)
  end
end
if slot ~= '' then
  redis.call('ZADD', KEYS[5], ARGV[10], slot)
  -- The set lives as long as its latest slot (a shorter request must not shorten it).
  local last = redis.call('ZRANGE', KEYS[5], -1, -1, 'WITHSCORES')
  redis.call('PEXPIREAT', KEYS[5], last[2])
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'j', ARGV[1])
if KEYS[6] ~= '' then
  redis.call('HINCRBY', KEYS[6], 'r', 1)
  redis.call('EXPIRE', KEYS[6], ARGV[12])
end
return {0, count, tokens, tostring(spent)}
"""


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


class Admission:
    """The admission script, run by EVALSHA (loaded again after a Redis restart)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._script = redis.register_script(ADMIT_LUA)

    async def enqueue(self, job: Job, limits: KeyLimits, usage_key: str | None = None) -> Job:
        """Enqueue `job` if `limits` admit it (first attempt) or it was admitted before (a later
        attempt); returns the job as enqueued (carrying its slot). Raises EdgeError(429)."""
        now = time.time()
        now_ms = int(now * 1000)
        window, ends = window_bounds(now, limits.window_s)
        first = not limits.admitted
        if limits.holds_slot:
            if limits.slot is None:  # the first attempt's; its retries hold the same one
                limits.slot = job.job_id
                if limits.reserves:
                    limits.slot += f":{limits.reserve_tokens}:{limits.reserve_usd!r}"
            job = msgspec.structs.replace(job, slot=limits.slot)
        ttl_ms = max(1, int((job.deadline - now) * 1000)) + JOB_KEY_GRACE_MS
        data = serialize_job_data(JOB_FUNCTION, (encode_job(job),), now_ms, arq_serialize)
        key_id = limits.key_id
        keys = [
            JOB_KEY_PREFIX + job.job_id,
            keyspace.queue(job.provider),
            keyspace.wake(job.provider),
            keyspace.key_rpm(key_id, window),
            keyspace.key_parallel(key_id),
            usage_key or "",
            keyspace.key_tpm(key_id, window),
            keyspace.key_spend(key_id, limits.charge.period),
        ]
        args: list[bytes | str | int | float] = [
            job.job_id,
            data,
            ttl_ms,
            now_ms,
            WAKE_STREAM_MAXLEN,
            _optional(limits.rpm),
            int(ends * 1000),
            _optional(limits.parallel),
            limits.slot or "",
            int(job.deadline * 1000) + JOB_KEY_GRACE_MS,
            "1" if first else "0",
            USAGE_TTL_S,
            _optional(limits.tpm),
            _optional(limits.budget),
            limits.reserve_tokens,
        ]
        # redis-py's script object runs EVALSHA and loads the script when Redis lacks it.
        verdict, count, tokens, spent = await self._script(keys=keys, args=args)
        verdict, count, tokens = int(verdict), int(count), int(tokens)
        if verdict == 1:
            assert limits.rpm is not None
            raise _rate_refusal(
                limits, "requests per minute", f"rpm_limit {limits.rpm}", limits.rpm, count, ends - now
            )
        if verdict == 2:
            assert limits.parallel is not None
            raise _parallel_refusal(limits, limits.parallel, count, ends - now)
        if verdict == 3:
            assert limits.tpm is not None
            raise _rate_refusal(
                limits,
                "tokens per minute",
                f"tpm_limit {limits.tpm}",
                limits.tpm,
                tokens,
                ends - now,
                "tokens",
            )
        if verdict == 4:
            assert limits.budget is not None
            raise _budget_refusal(limits, limits.budget, float(spent))
        limits.admitted = True
        if first:
            if limits.rpm is not None:
                limits.headers.extend(rate_headers(limits.rpm, count, ends - now))
            if limits.tpm is not None:
                limits.headers.extend(rate_headers(limits.tpm, tokens, ends - now, "tokens"))
        return job


def _optional(limit: float | None) -> str | int | float:
    if limit is None:
        return ""
    return repr(limit) if isinstance(limit, float) else limit


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
