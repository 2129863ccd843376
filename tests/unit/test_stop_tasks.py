"""`stop_tasks` ends background loops even when a library swallowed their first cancellation."""

from __future__ import annotations

import asyncio

from shared.tasks import stop_tasks


async def poller_that_loses_one_cancel(polls: list[int]) -> None:
    """What redis-py's asyncio client can do to a poll loop: a cancel that lands inside a
    command is caught, the command returns, and the loop carries on."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)  # the "command"
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
        polls.append(1)


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again_until_it_ends() -> None:
    polls: list[int] = []
    task = asyncio.create_task(poller_that_loses_one_cancel(polls))
    await asyncio.sleep(0.03)
    assert await stop_tasks([task], within_s=2) == set()
    assert task.cancelled()
    # A single cancel, as before, leaves it polling:
    again = asyncio.create_task(poller_that_loses_one_cancel(polls))
    await asyncio.sleep(0.03)
    again.cancel()
    await asyncio.sleep(0.1)
    assert not again.done()
    await stop_tasks([again])


async def test_a_task_that_never_stops_is_returned_after_the_time_limit() -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                pass

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0.02)  # inside its loop
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await stop_tasks([task], within_s=0.3) == {task}
    assert 0.3 <= loop.time() - started < 1.0
    stop.set()
    await task


async def test_finished_and_ordinary_tasks_stop_at_once() -> None:
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    sleeper = asyncio.create_task(asyncio.sleep(60))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await stop_tasks([done, sleeper]) == set()
    assert sleeper.cancelled() and loop.time() - started < 0.5
