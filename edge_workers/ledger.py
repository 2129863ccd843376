"""The records of answered attempts that nobody waits for, written in batches off the answer's path.

A successful attempt's breaker record (its latency sample), the served counter and the outcome
line of the dashboard were part of the answer's publication: Redis ran them before it wrote the
answer to the waiting front, about a fifth of the Redis time on a miss's path. They now wait
here, and one write every LEDGER_FLUSH_S (or every LEDGER_MAX of them) carries them all.

What must not wait still goes with the answer (edge_workers/publishing.py): a failure (it may
open the breaker) and any attempt whose deployment's breaker the front did not see closed (a
half-open breaker's probe frees its slot with its record). Such a publication first takes what
waits here, so the outcomes stream keeps the order of the answers.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from edge_workers.publishing import Record, ScriptCalls
from shared.commands import CommandList
from shared.resp import LeanRedis

log = logging.getLogger("edge.worker")

LEDGER_FLUSH_S = 0.05
LEDGER_MAX = 256


class Ledger:
    def __init__(self, lean: LeanRedis) -> None:
        self._lean = lean
        self._pending: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, record: Record) -> None:
        self._pending.append(record)
        if len(self._pending) >= LEDGER_MAX:
            self._flush_soon()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(LEDGER_FLUSH_S, self._flush_soon)

    def take(self) -> list[Record]:
        """What waits, for a publication that writes it now (it is no longer here)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        records, self._pending = self._pending, []
        return records

    async def flush(self) -> None:
        """Write what waits now (a worker stopping calls this last)."""
        records = self.take()
        if not records:
            return
        pipe = CommandList()
        calls = ScriptCalls(pipe)
        for script, rest in records:
            calls.add(script)
            rest(pipe)
        try:
            results = await self._lean.execute_many(pipe.commands)
            await calls.after(self._lean.client, results)
        except (RedisError, OSError) as e:  # records only: the answers went out already
            log.warning("%d attempt record(s) not written (%s)", len(records), type(e).__name__)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)
