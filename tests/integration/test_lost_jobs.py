"""The front's check for jobs Redis lost (edge_front/lost_jobs.py) against a real redis-server:
a job still queued, still leased by a worker, or answered but not yet read is waited for; only
a job Redis knows nothing of is failed, with a retryable 503."""

from __future__ import annotations

import time
from types import SimpleNamespace

from redis.asyncio import Redis

from edge_front.lost_jobs import SETTLE_S, LostJobsWatch
from edge_front.replies import ReplyRouter
from shared.arq_compat import IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX
from shared.queue import Job, Reply, encode_reply
from shared.resp import LeanRedis

STREAM = "edge:reply:test-front"


def job(name: str) -> Job:
    return Job(name, f"req-{name}", STREAM, "openai", "d", "m", b"{}", time.time() + 60)


def watch_over(r: Redis, replies: ReplyRouter) -> LostJobsWatch:
    router = SimpleNamespace(recoveries=0, epoch_changes=0)
    return LostJobsWatch(SimpleNamespace(router=router, replies=replies, queue_redis=r))  # type: ignore[arg-type]


async def test_only_a_job_redis_knows_nothing_of_is_failed(r: Redis) -> None:
    replies = ReplyRouter(LeanRedis(r, blocking=True), STREAM)
    waits = {}
    for name in ("queued", "leased", "answered", "lost", "not-enqueued-yet"):
        waits[name] = replies.expect(name, job(name))
        if name != "not-enqueued-yet":
            replies.enqueued_as(job(name))
    await r.set(JOB_KEY_PREFIX + "queued", b"x")
    await r.set(IN_PROGRESS_KEY_PREFIX + "leased", b"1")
    await r.xadd(STREAM, {b"r": encode_reply(Reply("answered"))})  # its keys are gone already
    lost = await watch_over(r, replies).check()
    assert [j.job_id for j in lost] == ["lost"]
    failed = waits.pop("lost").result()
    assert failed.status == 503 and b"job_lost" in failed.body and failed.retry_after
    assert not any(w.done() for w in waits.values())


async def test_a_check_is_due_only_after_a_sign_and_the_settle_time(r: Redis) -> None:
    replies = ReplyRouter(LeanRedis(r, blocking=True), STREAM)
    watch = watch_over(r, replies)
    assert not watch.note(0.0)
    watch.state.router.epoch_changes += 1  # type: ignore[attr-defined]
    assert not watch.note(10.0)
    assert not watch.note(10.0 + SETTLE_S - 0.1)
    assert watch.note(10.0 + SETTLE_S)
    replies.recoveries += 1  # another sign meanwhile: the workers get their time again
    assert not watch.note(11.0 + SETTLE_S)
