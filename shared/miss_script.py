"""A cache miss in one Redis round trip: one script that returns the L2 entry if there is one,
else joins an identical request already in flight (shared/flights.py), else admits and charges
the virtual key (shared/admission.py) and enqueues the job, marking it in flight: atomically.

The job is written exactly as arq's `enqueue_job` writes it (job key with expiry, queue
sorted-set entry). When an idle worker left a fresh ticket, the script takes it, publishes the
job to the worker's inbox channel and, if the worker received it, claims the job for it
(edge_workers/handoff.py): the worker starts the job without a claim of its own. Otherwise the
provider's wake stream gets its id, so workers wake at once and claim it; a small job's data
rides in its wake entry too, and the woken worker builds (and signs) its upstream request while
its claim is on the way (edge_workers/ahead.py).

With the L2 cache in its own Redis (`CACHE_REDIS_URL`) the lookup cannot be part of it: the
front reads L2 there first and runs this script without the lookup (two round trips).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import msgspec

from shared import keyspace
from shared.admission import KeyLimits, settle, window_bounds
from shared.arq_compat import (
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    RETRY_KEY_PREFIX,
    RETRY_KEY_TTL_S,
    WORKER_STATE_TTL_S,
    serialize_job_data,
)
from shared.queue import (
    JOB_FUNCTION,
    JOB_KEY_GRACE_MS,
    REPLY_STREAM_MAXLEN,
    TICKET_FRESH_MS,
    USAGE_TTL_S,
    WAKE_DATA_MAX_BYTES,
    WAKE_STREAM_MAXLEN,
    Job,
    arq_serialize,
    encode_job,
)
from shared.resp import LeanRedis, LeanScript

# KEYS: job key, queue, wake stream, rpm counter, in-flight set, deployment usage hash ('' none),
# tpm counter, spend hash (the key's four: '' for the master key and keys without limits), L2
# entry ('' no lookup), flight ('' the request takes no part in single-flight), its followers, its
# chunk log, the asking front's reply stream, the provider's idle workers' tickets.
# ARGV: job id, job data, job key ttl ms, now ms, wake maxlen, rpm limit ('' none), window reset
# ms (unix), parallel limit ('' none), slot ('' none: `<id>` or `<id>:<tokens>:<usd>`), slot
# expiry ms (unix), check ('1': first attempt), usage ttl s, tpm limit ('' none), budget USD
# ('' none), this request's reserved tokens, the follower member `<reply stream> <wait id>`, '1'
# to copy a streamed flight's chunks so far, the flight's value `<job id> <deadline ms>`, the
# reply stream's maxlen, the oldest store time (unix ms) of an L2 entry the request accepts ('' any:
# max-age, shared/cache_policy.py; an entry without a store time counts as too old), '1' to put
# the job data in the wake entry too (a small job: a worker prepares its call while claiming it),
# the oldest renewal time (unix ms) of a ticket still fresh.
# An enqueued job is published to an idle worker's inbox and claimed for it when a fresh ticket
# is there and its worker listens (edge_workers/handoff.py: no claim round trip), else named on
# the wake stream for any worker to claim.
# Returns {verdict, requests counted in the window, tokens counted in the window (used and
# reserved, this request's included), spend (used and reserved, as a string)}: verdict 0
# enqueued (and charged on a first attempt); refused (nothing written) 1 at the rpm limit, 2 at
# the parallel limit, 3 at the tpm limit, 4 over budget; {5, entry} the L2 entry; {6, leader}
# joined the flight `leader` (`<job id> <deadline ms>`).
MISS_LUA = """
if KEYS[9] ~= '' then
  local entry = redis.call('GET', KEYS[9])
  if entry and ARGV[20] ~= '' then  -- max-age: the store time follows the cost (shared/costs.py)
    local stored = tonumber(string.match(entry, '^[^ \\n]* (%d+)[ \\n]') or '0')
    if stored < tonumber(ARGV[20]) then entry = nil end
  end
  if entry then return {5, entry} end
end
if KEYS[10] ~= '' then
  local leader = redis.call('GET', KEYS[10])
  if leader then
    redis.call('SADD', KEYS[11], ARGV[16])
    redis.call('PEXPIRE', KEYS[11], math.max(1, redis.call('PTTL', KEYS[10])))
    if ARGV[17] == '1' then
      local space = string.find(ARGV[16], ' ', 1, true)
      local wait = string.sub(ARGV[16], space + 1)
      for _, entry in ipairs(redis.call('XRANGE', KEYS[12], '-', '+')) do
        local id = redis.call('XADD', KEYS[13], 'MAXLEN', '~', ARGV[19], '*', 'r', entry[2][2], 'w', wait)
        redis.call('PUBLISH', KEYS[13], id .. ' ' .. wait .. ' ' .. entry[2][2])  -- as FANOUT_LUA
      end
    end
    return {6, leader}
  end
end
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
local handed = false
while KEYS[14] ~= '' do
  local ticket = redis.call('ZPOPMAX', KEYS[14])
  if #ticket == 0 then break end
  if tonumber(ticket[2]) < tonumber(ARGV[22]) then
    redis.call('DEL', KEYS[14])  -- the freshest is stale: so are the rest
    break
  end
  local worker = ticket[1]
  local tries = tonumber(redis.call('GET', '@RETRY@' .. ARGV[1]) or '0') + 1
  local message = ARGV[1] .. ' ' .. ARGV[4] .. ' ' .. tries .. ' ' .. ARGV[2]
  if redis.call('PUBLISH', '@INBOX@' .. worker, message) > 0 then
    -- Claimed for the ticket's worker as the claim script would (lease, running set, try).
    redis.call('SET', '@IN_PROGRESS@' .. ARGV[1], '1', 'PX', ARGV[3] + 10000)
    redis.call('SADD', '@RUNNING@' .. worker, ARGV[1])
    redis.call('EXPIRE', '@RUNNING@' .. worker, @STATE_TTL@)
    redis.call('SET', '@RETRY@' .. ARGV[1], tries, 'EX', @RETRY_TTL@)
    handed = true
    break
  end
  -- Nobody listens on that inbox: its worker is gone. The next ticket, if any.
end
if handed then
elseif ARGV[21] == '1' then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'j', ARGV[1], 'd', ARGV[2])
else
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'j', ARGV[1])
end
if KEYS[6] ~= '' then
  redis.call('HINCRBY', KEYS[6], 'r', 1)
  redis.call('EXPIRE', KEYS[6], ARGV[12])
end
if KEYS[10] ~= '' then redis.call('SET', KEYS[10], ARGV[18], 'PX', ARGV[3]) end
return {0, count, tokens, tostring(spent)}
"""
for _name, _value in (
    ("IN_PROGRESS", IN_PROGRESS_KEY_PREFIX),
    ("RUNNING", keyspace.running("")),
    ("RETRY", RETRY_KEY_PREFIX),
    ("INBOX", keyspace.inbox("")),
    ("STATE_TTL", str(WORKER_STATE_TTL_S)),
    ("RETRY_TTL", str(RETRY_KEY_TTL_S)),
):
    MISS_LUA = MISS_LUA.replace(f"@{_name}@", _value)


@dataclass
class MissResult:
    """What the script did: enqueued `job`, found the L2 `entry`, or joined `leader`'s flight."""

    job: Job | None = None
    entry: bytes | None = None
    leader: str | None = None  # the flight's job id
    leader_deadline: float = 0.0  # unix time


_MISS = LeanScript(MISS_LUA, push_first=True)  # the job's push to a worker leaves before the reply


class MissScript:
    """MISS_LUA, run by EVALSHA (loaded again after a Redis restart) on a lean connection: it is
    every miss's round trip (shared/resp.py)."""

    def __init__(self, redis: LeanRedis) -> None:
        self._redis = redis

    async def run(
        self,
        job: Job,
        limits: KeyLimits | None = None,
        usage_key: str | None = None,
        lookup: str | None = None,
        wait_member: str | None = None,
        oldest: float | None = None,
    ) -> MissResult:
        """`lookup`: the L2 key to return if present (stored at unix time `oldest` or later,
        when given). `wait_member`: take part in single-flight
        as `<reply stream> <wait id>` (the job must then carry `flight=True` and a cache key).
        Raises EdgeError(429) at a key's limit."""
        now = time.time()
        now_ms = int(now * 1000)
        first = limits is not None and not limits.admitted
        ends = 0.0
        key_keys = ["", "", "", ""]
        key_args: list[str | int | float] = ["", 0, "", "", 0, "0", "", "", 0]
        if limits is not None:
            window, ends = window_bounds(now, limits.window_s)
            if limits.holds_slot:
                if limits.slot is None:  # the first attempt's; its retries hold the same one
                    limits.slot = job.job_id
                    if limits.reserves:
                        limits.slot += f":{limits.reserve_tokens}:{limits.reserve_usd!r}"
                job = msgspec.structs.replace(job, slot=limits.slot)
            key_id = limits.key_id
            key_keys = [
                keyspace.key_rpm(key_id, window),
                keyspace.key_parallel(key_id),
                keyspace.key_tpm(key_id, window),
                keyspace.key_spend(key_id, limits.charge.period),
            ]
            key_args = [
                _optional(limits.rpm),
                int(ends * 1000),
                _optional(limits.parallel),
                limits.slot or "",
                int(job.deadline * 1000) + JOB_KEY_GRACE_MS,
                "1" if first else "0",
                _optional(limits.tpm),
                _optional(limits.budget),
                limits.reserve_tokens,
            ]
        ttl_ms = max(1, int((job.deadline - now) * 1000)) + JOB_KEY_GRACE_MS
        data = serialize_job_data(JOB_FUNCTION, (encode_job(job),), now_ms, arq_serialize)
        flight = wait_member is not None and job.cache_key is not None
        cache_key = job.cache_key or ""
        keys = [
            JOB_KEY_PREFIX + job.job_id,
            keyspace.queue(job.provider),
            keyspace.wake(job.provider),
            key_keys[0],
            key_keys[1],
            usage_key or "",
            key_keys[2],
            key_keys[3],
            lookup or "",
            keyspace.flight(cache_key) if flight else "",
            keyspace.flight_followers(cache_key) if flight else "",
            keyspace.flight_log(cache_key) if flight else "",
            job.reply_to,
            keyspace.idle(job.provider),
        ]
        args: list[bytes | str | int | float] = [
            job.job_id,
            data,
            ttl_ms,
            now_ms,
            WAKE_STREAM_MAXLEN,
            key_args[0],
            key_args[1],
            key_args[2],
            key_args[3],
            key_args[4],
            key_args[5],
            USAGE_TTL_S,
            key_args[6],
            key_args[7],
            key_args[8],
            wait_member or "",
            "1" if job.stream else "0",
            f"{job.job_id} {int(job.deadline * 1000)}",
            REPLY_STREAM_MAXLEN,
            "" if oldest is None else int(oldest * 1000),
            "1" if len(data) <= WAKE_DATA_MAX_BYTES else "",
            now_ms - TICKET_FRESH_MS,
        ]
        result = await _MISS(self._redis, keys, args)
        verdict = int(result[0])
        if verdict == 5:
            return MissResult(entry=result[1])
        if verdict == 6:
            leader, _, deadline_ms = (result[1].decode()).partition(" ")
            return MissResult(leader=leader, leader_deadline=int(deadline_ms) / 1000)
        if limits is not None:
            settle(limits, verdict, int(result[1]), int(result[2]), float(result[3]), first, ends - now)
        return MissResult(job=job)


def _optional(limit: float | None) -> str | int | float:
    if limit is None:
        return ""
    return repr(limit) if isinstance(limit, float) else limit
