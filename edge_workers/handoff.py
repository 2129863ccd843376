"""Hand-off: an idle worker is given its next job already claimed, so it skips the claim.

A worker woken by the wake stream claims the job it names (a round trip: lease, running set, try
count) before it can call the upstream. An idle worker instead leaves a ticket, its id in its
provider's `idle` sorted set. The miss script that finds a fresh ticket takes it, writes what the
claim would have written for that worker and appends the job (data, queue score, try) to the
worker's inbox stream, which the worker reads in the same blocking XREAD as the wake stream
(shared/miss_script.py). At c=1 that is two messages and a Lua call fewer on every miss's path.

One job per ticket, and at most one ticket per worker (a sorted-set member): a worker with a
ticket out keeps a slot for the job it may be handed. It puts its ticket out again with the
answer that spends it (a command in the publication's round trip), or, when no answer follows,
with its next wake read. It renews an idle ticket every TICKET_RENEW_S, and the miss script
takes only tickets renewed within TICKET_FRESH_MS: a worker killed while idle can take one job
with it, which the reaper puts back on the queue (edge_workers/recovery.py) as it does any job a
dead worker held. A draining worker withdraws its ticket and runs what its inbox already holds.
"""

from __future__ import annotations

import time
from typing import Any

from edge_workers.runner import Claimed
from shared import keyspace
from shared.queue import TICKET_RENEW_S

Entries = list[tuple[bytes, dict[bytes, bytes]]]


class Ticket:
    """This worker's ticket and inbox."""

    def __init__(self, provider: str, worker_id: str) -> None:
        self.key = keyspace.idle(provider)
        self.worker_id = worker_id
        self.inbox = keyspace.inbox(worker_id)
        self.last_id: bytes | str = "0-0"  # the inbox entries up to this one are read
        self.out = False  # a ticket may be out: keep a slot for the job it brings
        self.closed = False  # draining: no ticket any more
        self._renewed = 0.0  # time.monotonic() of the last renewal

    def due(self) -> bool:
        """Whether the ticket should go (or be renewed) now."""
        if self.closed:
            return False
        return not self.out or time.monotonic() - self._renewed >= TICKET_RENEW_S

    def renew(self) -> tuple[Any, ...]:
        """The command that puts the ticket out (or renews it); it counts as out from here."""
        self.out = True
        self._renewed = time.monotonic()
        return ("ZADD", self.key, int(time.time() * 1000), self.worker_id)

    def renewal(self, free: int) -> tuple[Any, ...] | None:
        """`renew()` when it is due and the worker has `free` slots for it: two, one kept for
        the job the ticket brings and one for the wake stream's; else None."""
        return self.renew() if self.due() and free >= 2 else None

    def read(self, wake: str, wake_last: bytes | str, free: int, block_ms: int | None) -> tuple[Any, ...]:
        """The XREAD of the inbox and, when the worker has `free` slots to claim into, of the
        wake stream's entries after `wake_last`."""
        block = () if block_ms is None else ("BLOCK", block_ms)
        if free <= 0:
            return ("XREAD", *block, "STREAMS", self.inbox, self.last_id)
        streams = ("STREAMS", wake, self.inbox, wake_last, self.last_id)
        return ("XREAD", "COUNT", min(free, 1000), *block, *streams)

    def taken(self, read: dict[bytes, Entries]) -> list[Claimed]:
        """`handed` for the inbox's entries of a `read`'s reply (by stream name)."""
        return self.handed(read.get(self.inbox.encode(), []))

    def withdraw(self) -> tuple[Any, ...]:
        """The command that takes the ticket back; none goes out after it."""
        self.closed = True
        self.out = False
        return ("ZREM", self.key, self.worker_id)

    def handed(self, entries: Entries) -> list[Claimed]:
        """The jobs in these inbox entries, claimed for this worker by the miss script; reading
        one means the ticket was spent."""
        if not entries:
            return []
        self.out = False
        self.last_id = entries[-1][0]
        return [
            Claimed(fields[b"j"].decode(), int(fields[b"s"]), fields[b"d"], int(fields[b"t"]))
            for _, fields in entries
        ]
