"""Answers from workers, for every request waiting in this front process.

All waiting requests share one reader task and one Redis connection (a lean one, shared/resp.py:
it is on every miss's path): the reader blocks on this process's reply stream and hands each
reply to the future of its request. A request that waits
holds no connection, so 2,000 waiting requests cost 2,000 futures, not 2,000 sockets. What was
read is trimmed from the stream in the round trip of a later read (every 64 replies, or within
a second or two), so the stream holds only a few replies besides the undelivered ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from shared.queue import Job, Reply, decode_reply
from shared.resp import LeanRedis

log = logging.getLogger("edge.front")
# What the reader has read is trimmed from the stream after this many replies, or this long.
TRIM_EVERY = 64
TRIM_AFTER_S = 1.0


Waiter = asyncio.Future[Reply] | asyncio.Queue[Reply | None]


class _Wait:
    """One waiting request: how it waits, for which job, and whether the job is enqueued yet."""

    __slots__ = ("enqueued", "job", "waiter")

    def __init__(self, waiter: Waiter, job: Job | None) -> None:
        self.waiter = waiter
        self.job = job
        self.enqueued = False


class ReplyRouter:
    def __init__(self, redis: LeanRedis, stream: str) -> None:
        """`redis`: a blocking lean connection of the reader's own."""
        self.redis = redis
        self.stream = stream
        # A non-streamed answer waits on a future; a streamed one on a queue of its replies. Each
        # waiter is listed with its job (see `waiting_for`).
        self._waiters: dict[str, _Wait] = {}
        self._untrimmed = 0  # replies read since the last trim
        self._trimmed_at = time.monotonic()
        self.recoveries = 0  # reads that worked again after failing (edge_front/lost_jobs.py)
        self.last_id: bytes | str = "0-0"  # the last reply read (the stream is new and private)

    def __len__(self) -> int:
        return len(self._waiters)

    def expect(self, job_id: str, job: Job | None = None) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = _Wait(future, job)
        return future

    def expect_stream(self, job_id: str, job: Job | None = None) -> asyncio.Queue[Reply | None]:
        """Replies of a streamed answer, in order; `None` is put there by whoever ends the wait
        early (a client disconnect). Memory is bounded by the answer's size: the worker's chunks
        are small and a stream ends at its deadline."""
        queue: asyncio.Queue[Reply | None] = asyncio.Queue()
        self._waiters[job_id] = _Wait(queue, job)
        return queue

    def enqueued_as(self, job: Job) -> None:
        """The job is enqueued, as `job` (admission may have given it a key's slot to release)."""
        entry = self._waiters.get(job.job_id)
        if entry is not None:
            entry.job, entry.enqueued = job, True

    def forget(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    def waiting_for(self, provider: str | None = None, enqueued: bool = False) -> list[Job]:
        """The jobs this process waits on from `provider`'s workers (None: from any); only
        those already enqueued if `enqueued`."""
        return [
            wait.job
            for wait in self._waiters.values()
            if wait.job is not None
            and (provider is None or wait.job.provider == provider)
            and (wait.enqueued or not enqueued)
        ]

    def fail(self, job_ids: list[str], reply_for: Callable[[str], Reply]) -> None:
        """End these waits with a reply made here (the workers will never send one)."""
        for job_id in job_ids:
            self._hand_over(reply_for(job_id))

    def unread_range(self) -> tuple[str, str, str]:
        """(stream, min, max) for XRANGE: the replies this reader has not handed over yet."""
        return self.stream, after(self.last_id), "+"

    @staticmethod
    def job_ids_in(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> set[str]:
        """The job ids of the replies among these stream entries (undecodable ones skipped)."""
        ids = set()
        for _, fields in entries:
            try:
                ids.add(decode_reply(fields[b"r"]).job_id)
            except Exception:
                continue  # the reader drops it too
        return ids

    async def run(self) -> None:
        failing = False
        while True:
            try:
                batches = await self._read(self.last_id)
                if failing:
                    self.recoveries += 1
                failing = False
            except (RedisError, OSError) as e:
                if not failing:  # once per outage
                    log.warning("reply stream read failed (%s); retrying", type(e).__name__)
                failing = True
                await asyncio.sleep(0.2)
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                # This task serves every waiting request: it must outlive any surprise.
                log.exception("reply reader failed; retrying")
                await asyncio.sleep(0.2)
                continue
            for _, entries in batches or ():
                self._untrimmed += len(entries)
                for entry_id, fields in entries:
                    self.last_id = entry_id
                    try:
                        self._deliver(_field(fields, b"r"), _field(fields, b"w"))
                    except Exception:  # one bad reply must not end the reader every request needs
                        log.exception("delivering a reply failed")
            if batches:
                # The requests just handed their replies answer their clients first: the next
                # read's write to Redis is then off their path (a miss at c=1 waits for it).
                await asyncio.sleep(0)

    async def _read(self, last_id: bytes | str) -> Any:
        """Block for new replies. Every TRIM_EVERY replies, or once a second when fewer came,
        trim everything up to `last_id` (read and handed over already) in the same round trip:
        an exact trim, it only ever removes one batch. Trimming on every read would cost the
        reader, which every waiting request shares, a pipeline per reply."""
        now = time.monotonic()
        due = self._untrimmed >= TRIM_EVERY or (self._untrimmed and now - self._trimmed_at >= TRIM_AFTER_S)
        read = ("XREAD", "COUNT", 1000, "BLOCK", 1000, "STREAMS", self.stream, last_id)
        if not due or last_id == "0-0":
            return await self.redis.execute(*read)
        self._untrimmed, self._trimmed_at = 0, now
        trim = ("XTRIM", self.stream, "MINID", after(last_id))
        for reply in (replies := await self.redis.execute_many([trim, read])):
            if isinstance(reply, Exception):
                raise reply
        return replies[1]

    async def aclose(self) -> None:
        await self.redis.aclose()

    def _deliver(self, data: bytes | None, wait_id: bytes | None = None) -> None:
        if data is None:
            return
        try:
            reply = decode_reply(data)
        except Exception:
            log.error("undecodable reply on %s dropped", self.stream)
            return
        # A flight's reply to a request that joined it carries that request's own wait id.
        self._hand_over(reply, wait_id.decode() if wait_id is not None else reply.job_id)

    def _hand_over(self, reply: Reply, wait_id: str | None = None) -> None:
        wait_id = wait_id or reply.job_id
        entry = self._waiters.get(wait_id)
        if entry is None:
            return  # its request already ended (deadline, disconnect)
        waiter = entry.waiter
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(reply)
            if reply.kind != "chunk":
                del self._waiters[wait_id]
            return
        if reply.kind == "chunk":
            return  # a non-streamed request that joined a streamed flight waits for its end
        del self._waiters[wait_id]
        if not waiter.done():
            waiter.set_result(reply)


def _field(fields: list[bytes], name: bytes) -> bytes | None:
    """A field's value in an entry's raw field list (name, value, name, value, ...)."""
    for i in range(0, len(fields) - 1, 2):
        if fields[i] == name:
            return fields[i + 1]
    return None


def after(entry_id: bytes | str) -> str:
    """The smallest stream id after `entry_id` (an exclusive start that Redis 6.2 takes)."""
    millis, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return f"{millis}-{int(seq or 0) + 1}"
