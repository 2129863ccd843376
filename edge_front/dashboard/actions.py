"""What an operator can do from the dashboard (or `POST /admin/*` with the master key), and the
shared record of who did it.

Breakers are written in the hash shared/breaker.py's scripts read and write, so fronts and
workers see an operator's change on their next read like any other transition:

- reset: `closed`, failure window and probes zeroed (the latency EWMA is kept).
- force open: `open` with `opened_at` set in the future, so that `opened_at + cooldown` is the
  end of the hold. Neither script moves an open breaker to half-open before that, and a failure
  recorded while open changes nothing, so it stays open (drained: fronts send it nothing) until
  reset or until the hold ends. The hold is `duration_s`, at most and by default 24 hours: the
  hash's own lifetime (every recorded outcome sets its expiry to a day), past which it would
  vanish and read as closed anyway.

A cancelled job is stopped or dropped like one whose client went away (`shared.queue.cancel`),
and its waiting front is told at once with a 410 `cancelled` reply (not retryable, so the
front's dispatch does not run it again) instead of waiting for its deadline.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import msgspec
from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from shared import keyspace
from shared.arq_compat import JOB_KEY_PREFIX
from shared.breaker import HASH_TTL_S
from shared.config import ModelTable
from shared.errors import error_body
from shared.flights import post_reply
from shared.queue import (
    Job,
    Reply,
    arq_deserialize,
    cancel,
    decode_job,
    slot_of,
)

log = logging.getLogger("edge.admin")
ACTIONS_MAXLEN = 200  # the shared action log keeps about this many
MAX_HOLD_S = HASH_TTL_S
CANCELLED_STATUS = 410


class ActionError(Exception):
    """A refused action: 400 (bad input) or 404 (nothing by that name)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


class BreakerRequest(msgspec.Struct, forbid_unknown_fields=True):
    deployment: str
    # force open only: how long it stays open unless reset (seconds)
    duration_s: Annotated[float, msgspec.Meta(gt=0, le=MAX_HOLD_S)] = MAX_HOLD_S


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class ActionDone(msgspec.Struct):
    ok: bool
    action: str
    target: str
    detail: str


class Action(msgspec.Struct):
    """One line of the action log, as `GET /admin/state` lists it."""

    time: float  # unix seconds
    actor: str  # "master" (bearer) or "session:<id prefix>" (dashboard sign-in)
    action: str
    target: str
    detail: str


def _known(models: ModelTable, deployment_id: str) -> None:
    if models.by_id(deployment_id) is None:
        raise ActionError(404, f"No deployment {deployment_id!r}.", param="deployment")


async def reset_breaker(redis: Redis, models: ModelTable, deployment_id: str) -> str:
    _known(models, deployment_id)
    key = keyspace.breaker(deployment_id)
    now = int(time.time() * 1000)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(
            key, mapping={"state": "closed", "failures": 0, "window_start": now, "successes": 0, "probes": 0}
        )
        pipe.hdel(key, "opened_at", "half_since", "forced_by", "forced_until")
        pipe.expire(key, HASH_TTL_S)
        await pipe.execute()
    return "closed"


async def open_breaker(
    redis: Redis, models: ModelTable, deployment_id: str, duration_s: float, actor: str
) -> str:
    _known(models, deployment_id)
    key = keyspace.breaker(deployment_id)
    now = int(time.time() * 1000)
    hold_ms = int(duration_s * 1000)
    cooldown_ms = int(models.router.breaker.cooldown_s * 1000)
    fields = {
        "state": "open",
        "opened_at": now + hold_ms - cooldown_ms,  # see the module's docstring
        "failures": 0,
        "window_start": now,
        "successes": 0,
        "probes": 0,
        "forced_by": actor,
        "forced_until": now + hold_ms,
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(key, mapping=fields)
        pipe.expire(key, HASH_TTL_S)
        await pipe.execute()
    return f"open for {duration_s:g} s unless reset"


async def cancel_job(redis: Redis, providers: list[str], job_id: str) -> str:
    """Cancel a queued or running job; raises 404 when no provider's queue holds it."""
    async with redis.pipeline(transaction=False) as pipe:
        for provider in providers:
            pipe.zscore(keyspace.queue(provider), job_id)
        pipe.get(JOB_KEY_PREFIX + job_id)
        *scores, data = await pipe.execute()
    holder = next((p for p, score in zip(providers, scores, strict=True) if score is not None), None)
    if holder is None:
        raise ActionError(404, f"No queued or running job {job_id!r}.", param="job_id")
    job = _job_of(data)
    await cancel(redis, holder, [job_id], slot_of(job) if job is not None else None)
    if job is None:
        return f"cancelled on {holder}"
    body = error_body(CANCELLED_STATUS, "The gateway's operator cancelled this request.", code="cancelled")
    reply = Reply(job_id, status=CANCELLED_STATUS, body=body)
    await post_reply(redis, job.reply_to, reply)
    return f"cancelled on {holder}, request {job.request_id} answered {CANCELLED_STATUS}"


def _job_of(data: bytes | None) -> Job | None:
    """The gateway's job from arq's job key (gone once it expired: then only the queue entry)."""
    if data is None:
        return None
    try:
        return decode_job(arq_deserialize(data)["a"][0])
    except (msgspec.DecodeError, KeyError, IndexError, TypeError):
        return None


async def record(redis: Redis, actor: str, action: str, target: str, detail: str) -> None:
    """Log the action and add it to the shared log every front's dashboard lists."""
    log.info("admin action by %s: %s %s (%s)", actor, action, target, detail)
    fields: dict[FieldT, EncodableT] = {
        "t": f"{time.time():.3f}",
        "a": actor,
        "x": action,
        "g": target,
        "d": detail,
    }
    await redis.xadd(keyspace.admin_actions(), fields, maxlen=ACTIONS_MAXLEN, approximate=True)


def parse_action(fields: dict[bytes, bytes]) -> Action | None:
    try:
        return Action(
            time=float(fields[b"t"]),
            actor=fields[b"a"].decode(),
            action=fields[b"x"].decode(),
            target=fields[b"g"].decode(),
            detail=fields[b"d"].decode(),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
