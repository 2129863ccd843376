"""A virtual key's `rpm_limit` and `max_parallel_requests`, checked and charged in the round trip
that enqueues the request's job: exact across any number of fronts, at no extra round trip.

Only requests that go upstream count: a cache hit never reaches this. Requests without a key
(the master key) and keys without these limits use `shared.queue.enqueue` unchanged.

- Requests per minute: a fixed window (`EDGE_KEY_WINDOW_S`, 60 s by default, aligned to the
  clock), one counter per key and window (`edge:krpm:<key_id>:<window>`) that expires after its
  window. A fixed window is exact and O(1); it allows up to twice the limit across a boundary
  (LiteLLM's limiter has the same property).
- Parallel requests: a sorted set per key (`edge:kpar:<key_id>`) of slot ids scored by when the
  slot expires on its own (the request's deadline plus the job key's grace), so a slot whose
  job vanished (a front or worker that died, a lost reply) frees itself; expired members are
  pruned by every check. The worker's final publication, the worker's drop of an expired or
  cancelled job, and the front's cancel remove the slot.

A client request is charged once however many attempts (retries, failover, fallbacks) it takes,
as LiteLLM counts it: its first attempt runs the check and charges; later attempts enqueue
without a check and take the same slot again (the slot id is the first job's id; a ZADD of a
held slot changes nothing). The worker's answer to a failed attempt releases the slot, so
between that answer and the retry's enqueue (the backoff) another request may take it: only
then can a key briefly have one more request in flight than its limit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

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
    arq_serialize,
    encode_job,
)

# KEYS: job key, queue, wake stream, rpm counter, parallel set, deployment usage hash ('' none).
# ARGV: job id, job data, job key ttl ms, now ms, wake maxlen, rpm limit ('' none), window reset
# ms (unix), parallel limit ('' none), slot id, slot expiry ms (unix), check ('1': first attempt),
# usage ttl s.
# Returns {verdict, requests counted in the window}: verdict 0 enqueued (and charged on a first
# attempt), 1 refused at the rpm limit, 2 refused at the parallel limit (nothing written).
ADMIT_LUA = """
local rpm = tonumber(ARGV[6])
local par = tonumber(ARGV[8])
local count = 0
if par then redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[4]) end
if ARGV[11] == '1' then
  if rpm then
    count = tonumber(redis.call('GET', KEYS[4]) or '0')
    if count >= rpm then return {1, count} end
  end
  if par and redis.call('ZCARD', KEYS[5]) >= par then return {2, count} end
  if rpm then
    count = redis.call('INCR', KEYS[4])
    redis.call('PEXPIREAT', KEYS[4], ARGV[7] + 1000)
  end
end
if par then
  redis.call('ZADD', KEYS[5], ARGV[10], ARGV[9])
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
return {0, count}
"""


@dataclass
class KeyLimits:
    """One request's key limits, and what its admission found (shared by all its attempts)."""

    key_id: str
    name: str  # the alias, else the public id: what a refusal names (never the key)
    rpm: int | None
    parallel: int | None
    window_s: int = 60
    slot: str | None = None  # the parallel slot id, once admitted
    admitted: bool = False
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # OpenAI's x-ratelimit-*


def window_bounds(now: float, window_s: int) -> tuple[int, float]:
    """(index of the window holding `now`, unix time it ends)."""
    index = int(now // window_s)
    return index, (index + 1) * window_s


def rate_headers(limit: int, count: int, reset_s: float) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-ratelimit-limit-requests", str(limit).encode()),
        (b"x-ratelimit-remaining-requests", str(max(0, limit - count)).encode()),
        (b"x-ratelimit-reset-requests", f"{max(1, math.ceil(reset_s))}s".encode()),
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
        if limits.parallel is not None:
            if limits.slot is None:
                limits.slot = job.job_id
            job = _with_slot(job, limits.slot)
        ttl_ms = max(1, int((job.deadline - now) * 1000)) + JOB_KEY_GRACE_MS
        data = serialize_job_data(JOB_FUNCTION, (encode_job(job),), now_ms, arq_serialize)
        keys = [
            JOB_KEY_PREFIX + job.job_id,
            keyspace.queue(job.provider),
            keyspace.wake(job.provider),
            keyspace.key_rpm(limits.key_id, window),
            keyspace.key_parallel(limits.key_id),
            usage_key or "",
        ]
        args: list[bytes | str | int] = [
            job.job_id,
            data,
            ttl_ms,
            now_ms,
            WAKE_STREAM_MAXLEN,
            "" if limits.rpm is None else limits.rpm,
            int(ends * 1000),
            "" if limits.parallel is None else limits.parallel,
            limits.slot or "",
            int(job.deadline * 1000) + JOB_KEY_GRACE_MS,
            "1" if first else "0",
            USAGE_TTL_S,
        ]
        # redis-py's script object runs EVALSHA and loads the script when Redis lacks it.
        verdict, count = (int(v) for v in await self._script(keys=keys, args=args))
        if verdict == 1:
            assert limits.rpm is not None
            raise _rpm_refusal(limits, limits.rpm, count, ends - now)
        if verdict == 2:
            assert limits.parallel is not None
            raise _parallel_refusal(limits, limits.parallel, count, ends - now)
        limits.admitted = True
        if first and limits.rpm is not None:
            limits.headers = rate_headers(limits.rpm, count, ends - now)
        return job


def _with_slot(job: Job, slot: str) -> Job:
    return msgspec.structs.replace(job, slot=slot)


def _rpm_refusal(limits: KeyLimits, limit: int, count: int, reset_s: float) -> EdgeError:
    wait = max(1, math.ceil(reset_s))
    headers = {k.decode(): v.decode() for k, v in rate_headers(limit, count, reset_s)}
    return EdgeError(
        429,
        f"Rate limit reached for key '{limits.name}': requests per minute (rpm_limit {limit}); "
        f"retry in {wait} s.",
        code="rate_limit_exceeded",
        headers={"retry-after": str(wait), **headers},
    )


def _parallel_refusal(limits: KeyLimits, limit: int, count: int, reset_s: float) -> EdgeError:
    # The x-ratelimit-* headers speak of requests per minute; a key without an rpm limit gets
    # its parallel limit there (none remaining, retry in a second).
    if limits.rpm is not None:
        rate = rate_headers(limits.rpm, count, reset_s)
    else:
        rate = rate_headers(limit, limit, 1)
    headers = {"retry-after": "1", **{k.decode(): v.decode() for k, v in rate}}
    return EdgeError(
        429,
        f"Rate limit reached for key '{limits.name}': parallel requests (max_parallel_requests "
        f"{limit} already in flight); retry shortly.",
        code="rate_limit_exceeded",
        headers=headers,
    )
