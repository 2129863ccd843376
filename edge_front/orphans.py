"""Requests whose provider has no worker left: answered 503 after a grace, not at their deadline.

A request waits on a job; only a worker answers it. When the provider's last worker dies, jobs
already queued (and those the dead worker held, which no live worker can take over) would wait
until the request's deadline, ten minutes by default. The router's refresh already reads every
provider's live worker count twice a second; this task watches it, and once a provider has had
no live worker for `EDGE_NO_WORKER_GRACE` seconds (a restarting worker usually returns within
it), ends every wait on that provider in this process with a 503 and drops their jobs, so a
worker that comes back later does not run them for nobody.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from edge_front.router import REFRESH_S
from edge_front.state import FrontState
from shared.errors import error_body
from shared.queue import Reply, cancel, slot_of

log = logging.getLogger("edge.front")
NO_WORKER_RETRY_AFTER_S = 5.0


def _no_worker_reply(provider: str) -> bytes:
    return error_body(
        503,
        f"No worker is serving provider {provider} right now; the request was not answered.",
        code="no_worker",
    )


class NoWorkerWatch:
    def __init__(self, state: FrontState) -> None:
        self.state = state
        self.grace_s = state.settings.no_worker_grace_s
        self._gone_since: dict[str, float] = {}  # provider -> when it was first seen without workers

    def orphaned(self, now: float) -> list[str]:
        """Providers whose waits should end now: no live worker for longer than the grace."""
        router = self.state.router
        if now - router.refreshed_at > 3 * REFRESH_S:
            return []  # the counts are stale (Redis trouble): judge nothing on them
        out = []
        for provider, live in router.live_workers.items():
            if live > 0:
                self._gone_since.pop(provider, None)
                continue
            since = self._gone_since.setdefault(provider, now)
            if now - since >= self.grace_s and self.state.replies.waiting_for(provider):
                out.append(provider)
        return out

    async def fail(self, provider: str) -> None:
        replies = self.state.replies
        jobs = replies.waiting_for(provider)
        job_ids = [job.job_id for job in jobs]
        body = _no_worker_reply(provider)
        replies.fail(
            job_ids, lambda job_id: Reply(job_id, status=503, body=body, retry_after=NO_WORKER_RETRY_AFTER_S)
        )
        log.warning(
            "provider %s has had no worker for %gs: %d request(s) answered 503",
            provider,
            self.grace_s,
            len(job_ids),
        )
        try:
            # Their virtual keys' parallel slots come back now, not at the jobs' deadlines.
            slots = [slot for job in jobs for slot in slot_of(job)]
            await cancel(self.state.queue_redis, provider, job_ids, slots)
        except (TimeoutError, RedisError, OSError) as e:
            log.warning("could not drop the jobs of provider %s (%s)", provider, type(e).__name__)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                for provider in self.orphaned(time.monotonic()):
                    await self.fail(provider)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("no-worker watch failed; continuing")
