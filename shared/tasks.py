"""Stopping background tasks for sure.

A task that is cancelled while inside redis-py's asyncio connection handling can lose the
cancellation: the library catches it on some paths and carries on (redis/redis-py#2028, #2551,
seen here with redis 5.3: a front's key poller kept polling after its shutdown cancelled it, so
the process never exited). A background loop then runs on and its process cannot stop. So a
shutdown cancels again until every task has ended: a second cancel interrupts whatever the task
awaits next, and no library swallows every one of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

RECANCEL_EVERY_S = 0.1


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], within_s: float = 5.0) -> set[asyncio.Task[Any]]:
    """Cancel `tasks` and wait until each has ended, cancelling again every 0.1 s those that go
    on. Gives up after `within_s` seconds and returns the tasks still running (normally none)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(RECANCEL_EVERY_S, left))
    return pending


async def poll_forever(
    step: Callable[[], Awaitable[None]], every_s: float, log: logging.Logger, failure: str
) -> None:
    """Run `step` every `every_s` seconds until cancelled. A failure (Redis down, a record it
    cannot read) is logged once per outage, as `failure` with the error's type, and tried again."""
    failing = False
    while True:
        try:
            await step()
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not failing:
                log.warning(failure, type(e).__name__)
            failing = True
        await asyncio.sleep(every_s)
