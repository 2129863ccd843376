"""Every use of arq's internals, in one place.

The gateway writes arq's keys itself (one pipelined enqueue instead of arq's several round trips)
and its worker subclasses arq's `Worker` to claim jobs named by a wake stream. Both lean on names
arq does not promise to keep: key prefixes, `serialize_job`'s signature, and the `Worker`'s
private scheduling methods and attributes. They are all named here, `check_arq()` proves they
exist with the expected shapes, and a worker refuses to start when they do not (an arq upgrade
that renamed `_release_sem_dec_counter_on_complete` would otherwise make a worker silently stop
claiming after `max_jobs` jobs). `tests/unit/test_arq_compat.py` pins the same facts in CI.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import arq
from arq import constants
from arq.jobs import deserialize_job_raw, serialize_job
from arq.worker import Worker

from shared.commands import CommandSink

# arq's key layout, from arq's own constants (never spelled out again elsewhere).
JOB_KEY_PREFIX: str = constants.job_key_prefix
IN_PROGRESS_KEY_PREFIX: str = constants.in_progress_key_prefix
RETRY_KEY_PREFIX: str = constants.retry_key_prefix
HEALTH_CHECK_SUFFIX: str = constants.health_check_key_suffix

# The private Worker members the gateway's worker uses, and what it relies on each one being.
WORKER_METHODS: dict[str, tuple[str, ...]] = {
    "_poll_iteration": ("self",),  # arq's own poll: due jobs, task clean-up, health check
    "_release_sem_dec_counter_on_complete": ("self",),  # frees a slot when a job's task ends
    "start_jobs": ("self", "job_ids"),  # overridden: arq's poll calls it with due job ids
    "main": ("self",),  # overridden: arq's run loop
    # SIGTERM with job_completion_wait: stop picking jobs, finish those held, then stop.
    "handle_sig_wait_for_completion": ("self", "signum"),
}
WORKER_ATTRIBUTES = (
    "job_counter",
    "sem",
    "tasks",
    "in_progress_timeout_s",
    "poll_delay_s",
    "_pool",
    "allow_pick_jobs",  # False once a drain began (our claim loop honours it too)
    # What edge_workers/runner.py reads and counts in arq's place when it runs a job.
    "functions",
    "max_tries",
    "job_timeout_s",
    "jobs_complete",
    "jobs_failed",
    "jobs_retried",
)
SERIALIZE_JOB_PARAMS = ("function_name", "args", "kwargs", "job_try", "enqueue_time_ms", "serializer")
DESERIALIZE_JOB_PARAMS = ("r", "deserializer")


class ArqIncompatible(RuntimeError):
    """The installed arq lacks something the gateway's worker relies on."""


def check_arq(worker_class: type[Worker] = Worker) -> None:
    """Raise `ArqIncompatible`, naming every missing piece, unless arq has what the gateway uses."""
    problems: list[str] = []
    for name, params in WORKER_METHODS.items():
        method = getattr(worker_class, name, None)
        if not callable(method):
            problems.append(f"Worker.{name}() is missing")
        elif tuple(inspect.signature(method).parameters) != params:
            problems.append(f"Worker.{name}{inspect.signature(method)} is not ({', '.join(params)})")
    probe = _probe_worker(worker_class)
    problems.extend(f"Worker.{a} is missing" for a in WORKER_ATTRIBUTES if not hasattr(probe, a))
    if tuple(inspect.signature(serialize_job).parameters) != SERIALIZE_JOB_PARAMS:
        problems.append(f"arq.jobs.serialize_job{inspect.signature(serialize_job)} changed")
    if tuple(inspect.signature(deserialize_job_raw).parameters) != DESERIALIZE_JOB_PARAMS:
        problems.append(f"arq.jobs.deserialize_job_raw{inspect.signature(deserialize_job_raw)} changed")
    if problems:
        raise ArqIncompatible(
            f"arq {getattr(arq, 'VERSION', '?')} is not the arq this gateway was built for "
            f"(pinned in requirements.lock): " + "; ".join(problems)
        )


def _probe_worker(worker_class: type[Worker]) -> Any:
    """A Worker built without Redis, to see which attributes its constructor sets."""

    async def noop(ctx: dict[str, Any]) -> None:
        return None

    try:
        return worker_class(functions=[noop], handle_signals=False)
    except Exception as e:  # a constructor that changed shape is itself the finding
        raise ArqIncompatible(f"arq's Worker() cannot be built as the gateway builds it: {e}") from e


def deserialize_job_data(
    data: bytes, deserializer: Callable[[bytes], Any]
) -> tuple[str, tuple[Any, ...], int]:
    """(function name, args, enqueue time ms) of a job key's value, as arq's worker reads it."""
    function_name, args, _, _, enqueue_time_ms = deserialize_job_raw(data, deserializer=deserializer)
    return function_name, args, enqueue_time_ms


def finish_job(pipe: CommandSink, queue: str, job_id: str) -> None:
    """Queue on `pipe` what arq's `finish_job` does for a finished job kept without a result:
    its keys deleted (job, try count, in-progress lease) and its id off the queue."""
    pipe.delete(JOB_KEY_PREFIX + job_id, RETRY_KEY_PREFIX + job_id, IN_PROGRESS_KEY_PREFIX + job_id)
    pipe.zrem(queue, job_id)


def serialize_job_data(
    function_name: str, args: tuple[Any, ...], enqueue_time_ms: int, serializer: Callable[[Any], bytes]
) -> bytes:
    """A job key's value, exactly as `ArqRedis.enqueue_job` writes it."""
    return serialize_job(function_name, args, {}, None, enqueue_time_ms, serializer=serializer)


# ---- the worker's use of arq's private scheduling -------------------------------------------------


async def poll_once(worker: Worker) -> None:
    await worker._poll_iteration()


def forget_done_tasks(worker: Worker) -> None:
    """What arq's poll does with finished job tasks; a draining worker no longer polls, and arq's
    drain waits until `tasks` is empty."""
    for job_id, task in list(worker.tasks.items()):
        if task.done():
            del worker.tasks[job_id]


def free_slots(worker: Worker) -> int:
    return int(worker.max_jobs - worker.job_counter)


async def take_slot(worker: Worker) -> None:
    await worker.sem.acquire()
    worker.job_counter += 1


def release_slot(worker: Worker) -> None:
    worker._release_sem_dec_counter_on_complete()


def in_progress_ms(worker: Worker) -> int:
    return int(worker.in_progress_timeout_s * 1000)


# ---- scripts over arq's keys ----------------------------------------------------------------------

# arq's retry key (a job's try count) lives this long, as arq's `run_job` sets it.
RETRY_KEY_TTL_S = 88400

# A worker's running set (and its provider's registry and load hash) outlives the last heartbeat
# by this long: a reaper (see `edge_workers.recovery`) normally takes a dead worker's jobs over
# within WORKER_DEAD_AFTER_S; this bounds what is left when no worker of the provider remains.
WORKER_STATE_TTL_S = 30

# Claim, up to a limit, the ids whose job is due and not already running (arq's in-progress key,
# set as arq's own claim sets it), noting each in the worker's running set; return the claimed ids,
# their scores, their job data (false when the job key is gone) and their try, counted as arq's
# `run_job` counts it (INCR of its retry key, kept 88400 s: RETRY_KEY_TTL_S), so that running a
# job reads nothing more. Running jobs stay in arq's queue, so the ids are tried until the limit
# is met, not just the first few. The wake-stream entries given are deleted: their jobs are claimed now or
# cannot be (running or gone), so no other worker needs them and the stream is empty when idle.
# A worker whose hand-off ticket is out (edge_workers/handoff.py) keeps a slot for the job it may
# bring; to claim into that slot too, it names its ticket: taken back here, atomically, or, if a
# miss took it first, one job fewer is claimed (the handed one takes the slot).
# KEYS: queue, in-progress prefix, running set, wake stream, job-key prefix, retry-key prefix,
# idle tickets.
# ARGV: now_ms, in-progress ms, running-set ttl, most to claim, number of ids, the ticket to take
# back ('' none), ids..., entry ids...
CLAIM_LUA = """
local claimed = {}
local want = tonumber(ARGV[4])
if ARGV[6] ~= '' and redis.call('ZREM', KEYS[7], ARGV[6]) == 0 then want = want - 1 end
want = want * 4
local last = 6 + tonumber(ARGV[5])
for i = 7, last do
  if #claimed >= want then break end
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    if redis.call('SET', KEYS[2] .. id, '1', 'PX', ARGV[2], 'NX') then
      redis.call('SADD', KEYS[3], id)
      local tries = redis.call('INCR', KEYS[6] .. id)
      redis.call('EXPIRE', KEYS[6] .. id, 88400)
      claimed[#claimed + 1] = id
      claimed[#claimed + 1] = score
      claimed[#claimed + 1] = redis.call('GET', KEYS[5] .. id)
      claimed[#claimed + 1] = tries
    end
  end
end
if #claimed > 0 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
if #ARGV > last then redis.call('XDEL', KEYS[4], unpack(ARGV, last + 1)) end
return claimed
"""


# Take over a dead worker: KEYS registry, queue, wake stream, load hash, missing-keys hash, idle
# tickets; ARGV dead worker id, now_ms, its running-set key, job-key prefix, in-progress prefix,
# wake-stream maxlen (the jobs handed to it, edge_workers/handoff.py, are in its running set too).
# Atomic, so when several workers reap the same dead one, only the first
# re-queues its jobs. A job whose key is gone (answered, expired or cancelled) is not re-queued.
REAP_LUA = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return {} end
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
local jobs = redis.call('SMEMBERS', ARGV[3])
local requeued = {}
for _, id in ipairs(jobs) do
  if redis.call('EXISTS', ARGV[4] .. id) == 1 then
    redis.call('DEL', ARGV[5] .. id)
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'j', id)
    requeued[#requeued + 1] = id
  end
end
redis.call('DEL', ARGV[3])
return requeued
"""
