"""Single-flight across the cluster: identical concurrent misses share one upstream call.

A miss that may be served from the cache (same tenant namespace and cache key, Cache-Control
allowing both the lookup and the write) either leads a flight or joins one, in the round trip
that would have enqueued it (shared/miss_script.py):

- The leader's job is enqueued as usual and `edge:flight:<cache key>` names it. The job
  carries `flight=True`, so its worker publishes every reply through `FANOUT_LUA`: to the
  leader's reply stream as always, and to each follower's, tagged with the follower's own wait
  id. A streamed job also keeps its chunks in the flight's log, so a request that joins after
  the stream started gets it from the first chunk.
- A follower adds `<its reply stream> <its wait id>` to the flight's set (and, when it streams,
  gets the log copied to its reply stream in that same script) and waits like any miss. It is
  charged nothing (like a cache hit: it causes no upstream work).
- The job's last publication (the answer or its failure) ends the flight. A failure reaches the
  followers too, and each retries as its own next attempt: the first to enqueue again leads the
  new flight, the rest join it. That is simpler than electing a new leader and no slower (the
  leader's front retries the same way), and no follower waits on a job that will not answer.
- A leader whose client leaves keeps the job running while followers wait (`CANCEL_LUA`); with
  none, the job is cancelled as before, and the flight with it, atomically, so nobody joins a
  cancelled job. A job that expires in the queue ends the flight with a retryable 503.

The scripts touch followers' reply streams that are not declared in KEYS: fine on one Redis or
a Sentinel group (what the gateway supports), not on Redis Cluster.
"""

from __future__ import annotations

import hashlib
from typing import Any

from redis.asyncio import Redis

from shared import keyspace
from shared.arq_compat import JOB_KEY_PREFIX
from shared.commands import CommandSink
from shared.queue import REPLY_STREAM_MAXLEN, Job, Reply, encode_reply

# A reply stream outlives its last write by this long; a front that went away leaves no litter.
REPLY_STREAM_TTL_S = 3600

# Every reply is appended to its front's reply stream and published on the channel of the same
# name with its entry id (`<id> <wait id, or nothing> <reply>`): the front's reader is pushed it
# (nothing to re-arm per reply) and reads the stream only for what came while it was not
# subscribed (edge_front/replies.py).
# KEYS: the leader's reply stream, the flight, its followers, its chunk log (the three: '' for a
# job that leads no flight).
# ARGV: reply stream maxlen, reply stream ttl s, '1' when this is the job's last publication
# (ends the flight), '1' to keep chunks in the log, then (is chunk '1'/'0', reply) pairs.
FANOUT_LUA = """
local followers = {}
if KEYS[3] ~= '' then followers = redis.call('SMEMBERS', KEYS[3]) end
local targets = {}
for i, member in ipairs(followers) do
  local space = string.find(member, ' ', 1, true)
  targets[i] = {string.sub(member, 1, space - 1), string.sub(member, space + 1)}
end
for i = 5, #ARGV, 2 do
  local reply = ARGV[i + 1]
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'r', reply)
  redis.call('PUBLISH', KEYS[1], id .. '  ' .. reply)
  for _, target in ipairs(targets) do
    id = redis.call('XADD', target[1], 'MAXLEN', '~', ARGV[1], '*', 'r', reply, 'w', target[2])
    redis.call('PUBLISH', target[1], id .. ' ' .. target[2] .. ' ' .. reply)
  end
  if ARGV[4] == '1' and ARGV[i] == '1' then
    redis.call('XADD', KEYS[4], '*', 'r', reply)
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
for _, target in ipairs(targets) do redis.call('EXPIRE', target[1], ARGV[2]) end
if KEYS[2] == '' then
elseif ARGV[3] == '1' then
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
elseif ARGV[4] == '1' then
  local ttl = redis.call('PTTL', KEYS[2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[4], ttl) end
end
return #targets
"""
FANOUT_SHA = hashlib.sha1(FANOUT_LUA.encode()).hexdigest()

# KEYS: the flight, its followers, its chunk log, the job key, the queue, the key's in-flight
# set ('' none).
# ARGV: the job id, the cancel channel, the key's slot ('' none). Returns 1 when the job was
# cancelled, 0 when followers still wait for it (it runs on; its worker releases it).
CANCEL_LUA = """
if redis.call('SCARD', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('PUBLISH', ARGV[2], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[4])
if KEYS[6] ~= '' then redis.call('ZREM', KEYS[6], ARGV[3]) end
return 1
"""


def follower_member(reply_stream: str, wait_id: str) -> str:
    return f"{reply_stream} {wait_id}"


def fan_out(pipe: CommandSink, job: Job, replies: list[Reply], last: bool) -> None:
    """Queue on `pipe` the publication of `replies` of a job, to its front and, when it leads a
    flight, to every follower (EVALSHA: the worker loads the script at start and again after a
    NOSCRIPT)."""
    flight = job.flight and job.cache_key is not None
    args: list[str | bytes | int] = [REPLY_STREAM_MAXLEN, REPLY_STREAM_TTL_S, "1" if last else "0"]
    args.append("1" if flight and job.stream else "0")
    for reply in replies:
        args += ["1" if reply.kind == "chunk" else "0", encode_reply(reply)]
    keys = [job.reply_to, "", "", ""]
    if flight:
        assert job.cache_key is not None
        keys[1:] = [
            keyspace.flight(job.cache_key),
            keyspace.flight_followers(job.cache_key),
            keyspace.flight_log(job.cache_key),
        ]
    pipe.evalsha(FANOUT_SHA, len(keys), *keys, *args)


def reply_message(payload: bytes) -> tuple[bytes, bytes | None, bytes]:
    """A published reply's (entry id, wait id or None, encoded reply)."""
    entry_id, wait_id, reply = payload.split(b" ", 2)
    return entry_id, wait_id or None, reply


async def post_reply(redis: Redis, stream: str, reply: Reply | bytes) -> None:
    """Append `reply` (or its encoding) to a front's reply stream and publish it, with FANOUT_LUA
    as workers do, for the rare replies made elsewhere (an operator's cancel). Both in one
    script: a reader skips a pushed entry older than one it was pushed already."""
    data = reply if isinstance(reply, bytes) else encode_reply(reply)
    keys_and_args: list[Any] = [
        stream,
        "",
        "",
        "",
        REPLY_STREAM_MAXLEN,
        REPLY_STREAM_TTL_S,
        "0",
        "0",
        "0",
        data,
    ]
    await redis.eval(FANOUT_LUA, 4, *keys_and_args)  # type: ignore[misc]


class FlightCancel:
    """A flight leader's cancel: the job stops only if nobody joined it."""

    def __init__(self, redis: Redis) -> None:
        self._script = redis.register_script(CANCEL_LUA)

    async def __call__(self, job: Job) -> bool:
        assert job.cache_key is not None
        keys = [
            keyspace.flight(job.cache_key),
            keyspace.flight_followers(job.cache_key),
            keyspace.flight_log(job.cache_key),
            JOB_KEY_PREFIX + job.job_id,
            keyspace.queue(job.provider),
            keyspace.key_parallel(job.key_id) if job.key_id is not None and job.slot else "",
        ]
        args = [job.job_id, keyspace.cancels(job.provider), job.slot or ""]
        return bool(await self._script(keys=keys, args=args))


async def leave(redis: Redis, cache_key: str, member: str) -> None:
    """A follower whose client left: the flight stops writing to it (and may now be cancelled)."""
    await redis.srem(keyspace.flight_followers(cache_key), member)  # type: ignore[misc]
