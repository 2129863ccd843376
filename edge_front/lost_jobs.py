"""Requests whose job or reply Redis lost: asked again or answered, not left to their deadline.

A waiting request holds nothing in Redis but its job (queued, or leased by the worker that runs
it) and the reply stream its answer will come on. If Redis dies and comes back empty, or fails
over to a replica that had not caught up, or loses its last second of writes, those can vanish,
and the request would wait for an answer nobody is going to send, ten minutes by default.

Nothing is polled per request. This process notices that Redis may have lost data: its router
refresh or its reply reader worked again after failing, or `edge:epoch` changed (a token every
process sets if missing; an empty Redis has a new one). It then waits `SETTLE_S`, long enough
for every live worker's heartbeat to write back the leases of the jobs it still runs (see
edge_workers/recovery.py), and checks, in one pipeline, every job it waits for: a job still
queued (its job key), still running (its in-progress lease) or answered (its reply is in the
stream, not yet handed over) is waited for as before; any other was lost. A lost job's request
gets a retryable 503 `job_lost` reply: `dispatch` runs it again as its next attempt when its
deadline and attempts allow (a new job, so a late answer of the old one changes nothing), and
otherwise answers the client 503 with `Retry-After`. A stream already under way ends with that
error as an SSE event. Jobs not enqueued yet are not judged (their enqueue decides).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

from redis.exceptions import RedisError

from edge_front.router import REFRESH_S
from edge_front.state import FrontState
from shared.arq_compat import IN_PROGRESS_KEY_PREFIX, JOB_KEY_PREFIX
from shared.errors import error_body
from shared.queue import WORKER_DEAD_AFTER_S, Job, Reply, cancel, slot_of

log = logging.getLogger("edge.front")
# How long after Redis came back the jobs are checked: the workers' heartbeats write back what
# they run within one heartbeat; this leaves them the time the reaper gives them.
SETTLE_S = WORKER_DEAD_AFTER_S
LOST_RETRY_AFTER_S = 1.0

LOST_BODY = error_body(
    503,
    "The gateway lost this request's job when its Redis restarted or failed over; retry it.",
    code="job_lost",
)


class LostJobsWatch:
    def __init__(self, state: FrontState) -> None:
        self.state = state
        self._seen = self._signals()
        self._due: float | None = None  # when to check the waiting jobs (monotonic)

    def _signals(self) -> tuple[int, int, int]:
        router, replies = self.state.router, self.state.replies
        return router.recoveries, router.epoch_changes, replies.recoveries

    def note(self, now: float) -> bool:
        """Whether the waiting jobs are due for a check: a sign of lost data, then `SETTLE_S`."""
        signals = self._signals()
        if signals != self._seen:
            self._seen = signals
            self._due = now + SETTLE_S  # a new sign: wait again for the workers to speak up
        return self._due is not None and now >= self._due

    async def check(self) -> list[Job]:
        """End the waits of the jobs Redis no longer knows; returns those jobs."""
        replies = self.state.replies
        jobs = replies.waiting_for(enqueued=True)
        if not jobs:
            return []
        async with self.state.queue_redis.pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.exists(JOB_KEY_PREFIX + job.job_id, IN_PROGRESS_KEY_PREFIX + job.job_id)
            # A job that just finished has no keys left, but its reply is in the stream, read or
            # about to be: after the EXISTS, so a reply written before its keys went is seen.
            pipe.xrange(*replies.unread_range())
            *known, unread = await pipe.execute()
        answered = replies.job_ids_in(unread)
        lost = [
            job for job, count in zip(jobs, known, strict=True) if not count and job.job_id not in answered
        ]
        if not lost:
            return []
        log.warning("%d waiting request(s) lost their job with Redis's data; asking again", len(lost))
        self.state.replies.fail(
            [job.job_id for job in lost],
            lambda job_id: Reply(job_id, status=503, body=LOST_BODY, retry_after=LOST_RETRY_AFTER_S),
        )
        # Whatever is left of them (a parallel slot that survived, say) goes too.
        by_provider: dict[str, list[Job]] = defaultdict(list)
        for job in lost:
            by_provider[job.provider].append(job)
        for provider, gone in by_provider.items():
            slots = [slot for job in gone for slot in slot_of(job)]
            await cancel(self.state.queue_redis, provider, [job.job_id for job in gone], slots)
        return lost

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            if not self.note(time.monotonic()):
                continue
            try:
                await self.check()
                self._due = None
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError) as e:  # Redis is away again: a new sign comes
                log.warning("could not check the waiting jobs (%s); will again", type(e).__name__)
            except Exception:
                log.exception("lost-jobs check failed; continuing")
                self._due = None
