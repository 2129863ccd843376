"""Answers from workers, for every request waiting in this front process.

Workers append each reply to this process's reply stream and publish it on the channel of the
same name (shared/flights.py). One reader serves every waiting request: it stays subscribed on
a lean connection of its own (shared/resp.py) and hands each pushed reply to the future of its
request, with nothing to re-arm per reply (a blocking read would cost a write to Redis per
batch, on a miss's path). A request that waits holds no connection, so 2,000 waiting requests
cost 2,000 futures, not 2,000 sockets.

The stream is what makes the push safe: whenever the reader (re)subscribes, and once a second
besides, it reads the stream from the last reply it handed over, so a reply published while it
was not subscribed (a Redis restart, a failover, a dropped connection) is handed over all the
same, and a reply pushed twice (read and pushed) only once, by its entry id. The same once-a-
second round trip trims what was handed over from the stream, and checks that Redis (the
primary) sees the subscription: one on a demoted primary is opened again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.flights import reply_message
from shared.queue import Job, Reply, decode_reply
from shared.resp import LeanRedis

log = logging.getLogger("edge.front")
# What the reader handed over is trimmed from the stream this often (with a read of what the push
# may have missed and a check of the subscription).
TRIM_AFTER_S = 1.0
READ_COUNT = 1000


Waiter = asyncio.Future[Reply] | asyncio.Queue[Reply | None]


class _Wait:
    """One waiting request: how it waits, for which job, and whether the job is enqueued yet."""

    __slots__ = ("enqueued", "job", "waiter")

    def __init__(self, waiter: Waiter, job: Job | None) -> None:
        self.waiter = waiter
        self.job = job
        self.enqueued = False


class ReplyRouter:
    def __init__(self, redis: LeanRedis, stream: str, subscriber: Redis | None = None) -> None:
        """`redis`: a lean connection for the reader's reads and trims; the subscription gets a
        connection of its own, made as `subscriber` (a client without a read timeout) makes
        them, or else as `redis`'s client does."""
        self.redis = redis
        self.stream = stream
        self._subscriber_client = subscriber
        self._subscriber: LeanRedis | None = None  # made by `run`
        self._held: list[bytes] | None = None  # pushes while the stream is read after subscribing
        self._last_key = (0, 0)  # `last_id` as numbers: entries up to it are handed over
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
        client = self._subscriber_client or self.redis.client
        self._subscriber = subscriber = LeanRedis(client, blocking=True, on_push=self._pushed)
        failing = False
        while True:
            try:
                self._held = []  # pushes wait until what came before them is read
                await subscriber.execute("SUBSCRIBE", self.stream)
                await self._read_behind()
                held, self._held = self._held, None
                for payload in held:
                    self._pushed(payload)
                if failing:
                    self.recoveries += 1
                failing = False
                await self._keep(subscriber)
            except (RedisError, OSError) as e:
                if not failing:  # once per outage
                    log.warning("reply stream read failed (%s); retrying", type(e).__name__)
                failing = True
            except asyncio.CancelledError:
                raise
            except Exception:
                # This task serves every waiting request: it must outlive any surprise.
                log.exception("reply reader failed; retrying")
            self._held = None
            await subscriber.aclose()
            await asyncio.sleep(0.2)

    async def _keep(self, subscriber: LeanRedis) -> None:
        """While subscribed: once a second, trim what was handed over, read what the push may
        have missed and check the subscription against the primary; return when it is gone."""
        while True:
            closed = asyncio.ensure_future(subscriber.wait_closed())
            done, _ = await asyncio.wait({closed}, timeout=TRIM_AFTER_S)
            if done:
                return
            closed.cancel()
            commands: list[tuple[Any, ...]] = [("PUBSUB", "NUMSUB", self.stream)]
            if self._untrimmed and self.last_id != "0-0":
                commands.append(("XTRIM", self.stream, "MINID", after(self.last_id)))
                self._untrimmed = 0
            commands.append(self._read_command())
            replies = await self.redis.execute_many(commands)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
            self._deliver_entries(replies[-1])
            if replies[0][1:] == [0]:  # the subscription is on a server no longer the primary
                return

    async def _read_behind(self) -> None:
        """Hand over what is on the stream after `last_id`, up to its end."""
        while True:
            if self._deliver_entries(await self.redis.execute(*self._read_command())) < READ_COUNT:
                return

    def _read_command(self) -> tuple[Any, ...]:
        return ("XREAD", "COUNT", READ_COUNT, "STREAMS", self.stream, self.last_id)

    def _deliver_entries(self, reply: Any) -> int:
        """Hand over the entries of an XREAD reply not handed over yet; how many it held."""
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            self._take(entry_id, _field(fields, b"r"), _field(fields, b"w"))
        return len(entries)

    def _pushed(self, payload: bytes) -> None:
        """A reply published to the subscription (the subscriber's callback)."""
        if self._held is not None:
            self._held.append(payload)
            return
        try:
            entry_id, wait_id, data = reply_message(payload)
        except ValueError:
            log.error("malformed reply message on %s dropped", self.stream)
            return
        self._take(entry_id, data, wait_id)

    def _take(self, entry_id: bytes, data: bytes | None, wait_id: bytes | None) -> None:
        """Hand over the reply of stream entry `entry_id` unless it was already (pushed and read)."""
        key = _id_key(entry_id)
        if key <= self._last_key:
            return
        self._last_key, self.last_id = key, entry_id
        self._untrimmed += 1
        try:
            self._deliver(data, wait_id)
        except Exception:  # one bad reply must not end the reader every request needs
            log.exception("delivering a reply failed")

    async def aclose(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.aclose()
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


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    millis, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(millis), int(seq or 0)


def after(entry_id: bytes | str) -> str:
    """The smallest stream id after `entry_id` (an exclusive start that Redis 6.2 takes)."""
    millis, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return f"{millis}-{int(seq or 0) + 1}"
