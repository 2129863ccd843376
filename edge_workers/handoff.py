"""Hand-off: an idle worker is given its next job already claimed, so it skips the claim.

A worker woken by the wake stream claims the job it names (a round trip: lease, running set, try
count) and reads the wake stream again before it can take another. An idle worker instead
leaves a ticket, its id in its provider's `idle` sorted set, and listens on its inbox, a pub/sub
channel of its own. The miss script that finds a fresh ticket takes it and PUBLISHes the job
(id, queue score, try, data) to that inbox; only when a subscriber received it does it write what
the claim would have written for that worker (shared/miss_script.py). The job reaches the worker
as a message on a connection that stays subscribed: no claim and no read to re-arm, at c=1 three
messages and a Lua call fewer on every miss's path.

A ticket whose worker is gone costs nothing: its connection closed with it, the PUBLISH reaches
nobody, and the script tries the next ticket or wakes any worker through the wake stream. One job
per ticket, at most one ticket per worker (a sorted-set member), and a worker with a ticket out
keeps a slot for the job it may bring. It puts its ticket out again with the answer that spends
it (a command in the publication's round trip) or with its next wake read, renews an idle one
every TICKET_RENEW_S (the script takes only tickets renewed within TICKET_FRESH_MS), and a
draining worker withdraws it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_workers.runner import Claimed
from shared import keyspace
from shared.arq_compat import WORKER_STATE_TTL_S
from shared.queue import TICKET_RENEW_S
from shared.resp import LeanRedis

log = logging.getLogger("edge.worker")

Commands = tuple[tuple[Any, ...], ...]


class Ticket:
    """This worker's ticket: the commands that put it out and take it back."""

    def __init__(self, provider: str, worker_id: str) -> None:
        self.key = keyspace.idle(provider)
        self.worker_id = worker_id
        self.out = False  # a ticket may be out: keep a slot for the job it brings
        self.closed = False  # draining: no ticket any more
        self.listening = False  # the inbox is subscribed: a ticket may go out
        self._renewed = 0.0  # time.monotonic() of the last renewal

    def renewal(self, free: int) -> Commands:
        """The commands that put the ticket out (or renew it) when that is due and the worker
        has `free` slots for it: two, one kept for the job it brings and one for the wake
        stream's; else none. The ticket counts as out from here.

        The set gets its expiry with each ticket: the miss that takes the last ticket deletes
        it, and the heartbeat's expiry may come too late (a worker that dies in between would
        leave the set without one)."""
        if self.closed or not self.listening or free < 2:
            return ()
        if self.out and time.monotonic() - self._renewed < TICKET_RENEW_S:
            return ()
        self.out = True
        self._renewed = time.monotonic()
        return (
            ("ZADD", self.key, int(time.time() * 1000), self.worker_id),
            ("EXPIRE", self.key, WORKER_STATE_TTL_S),
        )

    def withdraw(self) -> tuple[Any, ...]:
        """The command that takes the ticket back; none goes out after it."""
        self.closed = True
        self.out = False
        return ("ZREM", self.key, self.worker_id)

    def spent(self) -> None:
        """A job it brought arrived: no ticket is out until the next renewal."""
        self.out = False


def handed_job(message: bytes) -> Claimed:
    """The job in an inbox message (`<id> <queue score> <try> <arq job data>`), claimed for this
    worker by the miss script."""
    job_id, score, job_try, data = message.split(b" ", 3)
    return Claimed(job_id.decode(), int(score), data, int(job_try))


class Inbox:
    """The worker's subscription to its inbox channel; each job that arrives goes to `on_job`."""

    def __init__(self, client: Redis, ticket: Ticket, on_job: Callable[[Claimed], None]) -> None:
        self.channel = keyspace.inbox(ticket.worker_id)
        self.ticket = ticket
        self._on_job = on_job
        self._lean = LeanRedis(client, blocking=True, on_push=self._message)

    def _message(self, payload: bytes) -> None:
        self.ticket.spent()
        self._on_job(handed_job(payload))

    async def listen(self) -> None:
        """Stay subscribed: subscribe again whenever the connection drops (a Redis restart or
        failover). While it is down no ticket goes out, and one out brings nothing (the PUBLISH
        reaches nobody, so the script wakes any worker instead)."""
        failed = False
        while True:
            try:
                await self._lean.execute("SUBSCRIBE", self.channel)
                self.ticket.listening, failed = True, False
                await self._lean.wait_closed()
            except (RedisError, OSError) as e:
                if not failed:
                    log.warning("inbox subscription failed (%s); retrying", type(e).__name__)
                failed = True
            self.ticket.listening = False
            await asyncio.sleep(0.5)

    def numsub(self) -> tuple[Any, ...]:
        """The command whose reply `check` wants, sent on a connection that follows the primary."""
        return ("PUBSUB", "NUMSUB", self.channel)

    async def check(self, subscribers: Any) -> None:
        """`subscribers`: `numsub()`'s reply. No subscriber there means this subscription is on a
        server that is no longer the primary (a failover): subscribe again."""
        if self.ticket.listening and isinstance(subscribers, list) and subscribers[1:] == [0]:
            self.ticket.listening = False
            await self._lean.aclose()

    async def aclose(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._lean.aclose()
