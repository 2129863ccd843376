"""Answers from workers, for every request waiting in this front process.

All waiting requests share one reader task and one Redis connection: the reader blocks on this
process's reply stream and hands each reply to the future of its request. A request that waits
holds no connection, so 2,000 waiting requests cost 2,000 futures, not 2,000 sockets.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.queue import Reply, decode_reply

log = logging.getLogger("edge.front")


class ReplyRouter:
    def __init__(self, redis: Redis, stream: str) -> None:
        self.redis = redis
        self.stream = stream
        # A non-streamed answer waits on a future; a streamed one on a queue of its replies.
        self._waiters: dict[str, asyncio.Future[Reply] | asyncio.Queue[Reply | None]] = {}

    def __len__(self) -> int:
        return len(self._waiters)

    def expect(self, job_id: str) -> asyncio.Future[Reply]:
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiters[job_id] = future
        return future

    def expect_stream(self, job_id: str) -> asyncio.Queue[Reply | None]:
        """Replies of a streamed answer, in order; `None` is put there by whoever ends the wait
        early (a client disconnect). Memory is bounded by the answer's size: the worker's chunks
        are small and a stream ends at its deadline."""
        queue: asyncio.Queue[Reply | None] = asyncio.Queue()
        self._waiters[job_id] = queue
        return queue

    def forget(self, job_id: str) -> None:
        self._waiters.pop(job_id, None)

    async def run(self) -> None:
        last_id: bytes | str = "0-0"  # the stream is new and private to this process
        failing = False
        while True:
            try:
                batches = await self.redis.xread({self.stream: last_id}, count=1000, block=1000)
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
            for _, entries in batches:
                for entry_id, fields in entries:
                    last_id = entry_id
                    self._deliver(fields.get(b"r"))

    def _deliver(self, data: bytes | None) -> None:
        if data is None:
            return
        try:
            reply = decode_reply(data)
        except Exception:
            log.error("undecodable reply on %s dropped", self.stream)
            return
        waiter = self._waiters.get(reply.job_id)
        if waiter is None:
            return  # its request already ended (deadline, disconnect)
        if isinstance(waiter, asyncio.Queue):
            waiter.put_nowait(reply)
            if reply.kind != "chunk":
                del self._waiters[reply.job_id]
            return
        del self._waiters[reply.job_id]
        if not waiter.done():
            waiter.set_result(reply)
