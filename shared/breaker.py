"""Circuit breakers shared by every process, kept in one Redis hash per deployment.

closed --(N failures within the window)--> open --(cooldown)--> half-open
half-open --(M probe successes)--> closed;  half-open --(a failure)--> open again.

Workers record each upstream attempt's outcome (`RECORD_LUA`, in the pipeline that publishes
the answer, so it costs no extra round trip); fronts read every breaker twice a second and
take a probe slot (`PROBE_LUA`) before sending a request to a half-open deployment.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.routing import BreakerSettings

State = Literal["closed", "half_open", "open"]
Outcome = Literal["ok", "fail", "neutral"]
HASH_TTL_S = 86_400
EWMA_ALPHA = 0.2

# KEYS[1] hash; ARGV: now_ms, outcome, failures, window_ms, cooldown_ms, close_after, latency_ms, alpha, ttl_s
RECORD_LUA = """
local key, now, outcome = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local h = redis.call('HMGET', key, 'state', 'failures', 'window_start', 'opened_at', 'successes', 'ewma_ms')
local state = h[1] or 'closed'
if outcome == 'ok' and tonumber(ARGV[7]) >= 0 then
  local ewma = tonumber(h[6])
  local sample = tonumber(ARGV[7])
  if ewma then ewma = ewma + tonumber(ARGV[8]) * (sample - ewma) else ewma = sample end
  redis.call('HSET', key, 'ewma_ms', tostring(ewma))
end
if state == 'open' and now - (tonumber(h[4]) or 0) >= tonumber(ARGV[5]) then
  state = 'half_open'
  redis.call('HSET', key, 'state', 'half_open', 'half_since', now, 'successes', 0, 'probes', 0)
end
if state == 'closed' and outcome == 'fail' then
  local failures, start = tonumber(h[2]) or 0, tonumber(h[3]) or 0
  if now - start > tonumber(ARGV[4]) then failures, start = 0, now end
  failures = failures + 1
  if failures >= tonumber(ARGV[3]) then
    redis.call('HSET', key, 'state', 'open', 'opened_at', now, 'failures', 0, 'window_start', now)
  else
    redis.call('HSET', key, 'failures', failures, 'window_start', start)
  end
elseif state == 'half_open' and outcome == 'fail' then
  redis.call('HSET', key, 'state', 'open', 'opened_at', now, 'successes', 0, 'probes', 0)
elseif state == 'half_open' and outcome == 'ok' then
  -- the probe is done: its slot frees for the next one
  if redis.call('HINCRBY', key, 'probes', -1) < 0 then redis.call('HSET', key, 'probes', 0) end
  if redis.call('HINCRBY', key, 'successes', 1) >= tonumber(ARGV[6]) then
    redis.call('HSET', key, 'state', 'closed', 'failures', 0, 'window_start', now)
    redis.call('HSET', key, 'successes', 0, 'probes', 0)
  end
end
redis.call('EXPIRE', key, ARGV[9])
return state
"""

# KEYS[1] hash; ARGV: now_ms, cooldown_ms, probes. Returns 1 if the caller may send a request.
# `probes` counts probes in flight: each takes a slot here and gives it back when it succeeds.
PROBE_LUA = """
local key, now, cooldown = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
local h = redis.call('HMGET', key, 'state', 'opened_at', 'half_since')
local state = h[1] or 'closed'
if state == 'closed' then return 1 end
if state == 'open' then
  if now - (tonumber(h[2]) or 0) < cooldown then return 0 end
  redis.call('HSET', key, 'state', 'half_open', 'half_since', now, 'successes', 0, 'probes', 0)
elseif now - (tonumber(h[3]) or 0) > cooldown then
  -- probes that never reported back (lost with a dead worker) must not wedge it half-open
  redis.call('HSET', key, 'half_since', now, 'probes', 0)
end
return redis.call('HINCRBY', key, 'probes', 1) <= tonumber(ARGV[3]) and 1 or 0
"""

FIELDS = ("state", "opened_at", "ewma_ms")


class BreakerView(msgspec.Struct, frozen=True):
    """What a front knows of one deployment's breaker, from its last read."""

    state: State = "closed"
    opened_at_ms: float = 0.0
    ewma_ms: float | None = None

    @classmethod
    def from_fields(cls, values: list[bytes | None]) -> BreakerView:
        state, opened_at, ewma = (v.decode() if v is not None else None for v in values)
        return cls(
            state=state if state in ("open", "half_open") else "closed",  # type: ignore[arg-type]
            opened_at_ms=float(opened_at or 0),
            ewma_ms=float(ewma) if ewma else None,
        )

    def effective(self, now_ms: float, settings: BreakerSettings) -> State:
        """An open breaker whose cooldown has passed is half-open, even before anyone says so."""
        if self.state == "open" and now_ms - self.opened_at_ms >= settings.cooldown_s * 1000:
            return "half_open"
        return self.state


def record_args(now_ms: int, outcome: Outcome, settings: BreakerSettings, latency_ms: float) -> list[str]:
    values: list[object] = [
        now_ms,
        outcome,
        settings.failures,
        int(settings.window_s * 1000),
        int(settings.cooldown_s * 1000),
        settings.close_after,
        latency_ms,
        EWMA_ALPHA,
        HASH_TTL_S,
    ]
    return [str(v) for v in values]


def outcome_of(status: int, reached_upstream: bool) -> Outcome:
    """Only the upstream's own failures count against it, not the client's bad requests."""
    if not reached_upstream:
        return "neutral"
    if status < 400:
        return "ok"
    if status in (408, 429) or status >= 500:
        return "fail"
    return "neutral"
