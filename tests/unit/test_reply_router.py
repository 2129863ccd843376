"""edge_front/replies.py: one reader task hands each worker reply on the stream to its waiting request.

The router reads on its own lean connection to a fake Redis served over TCP (fakeredis's
TcpFakeServer); the test writes replies with a redis-py client of the same server, as workers
do. Results are awaited on the futures and queues the router hands out, never by sleeping;
`asyncio.wait_for` only keeps a broken reader from hanging the test.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import fakeredis
import msgspec
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from edge_front.replies import ReplyRouter
from shared.queue import Reply, encode_reply
from shared.resp import LeanRedis

STREAM = "edge:reply:front-1"
T = TypeVar("T")


@dataclass
class Setup:
    router: ReplyRouter
    writer: Redis
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.router.run())

    async def soon(self, awaitable: Awaitable[T]) -> T:
        """The awaitable's result; fails at once if the reader task dies meanwhile, and after
        ten seconds if nothing happens (only so that a broken reader cannot hang the run)."""
        waiter = asyncio.ensure_future(awaitable)
        watched = {waiter} if self.task is None else {waiter, self.task}
        await asyncio.wait(watched, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if not waiter.done():
            waiter.cancel()
            if self.task is not None and self.task.done():
                raise AssertionError(f"the reader task died: {self.task.exception()!r}")
            raise AssertionError("nothing arrived within ten seconds")
        return waiter.result()

    async def send(self, reply: Reply) -> None:
        """As a worker does: appended to the stream and published with its entry id."""
        await self.send_raw(encode_reply(reply))

    async def send_raw(self, data: bytes) -> None:
        """Any bytes as a reply, as a worker sends one (its script, FANOUT_LUA, does both at once:
        fakeredis runs no Lua, and this test is the only writer)."""
        entry_id = await self.writer.xadd(STREAM, {b"r": data})
        await self.writer.publish(STREAM, entry_id + b"  " + data)

    async def send_unpublished(self, fields: dict[bytes, bytes]) -> None:
        """Appended to the stream only: the reader finds it in its read of the stream."""
        await self.writer.xadd(STREAM, fields)  # type: ignore[arg-type]

    async def barrier(self, name: str = "barrier") -> Reply:
        """A final reply for a job of its own, awaited: every entry sent before it was handled."""
        future = self.router.expect(name)
        await self.send(Reply(name, body=name.encode()))
        return await self.soon(future)


@pytest.fixture(scope="module")
def fake_server() -> Iterator[str]:
    """A fake Redis on a loopback port: its URL."""
    server = fakeredis.TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"redis://{host}:{port}/0"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def setup(fake_server: str) -> AsyncIterator[Setup]:
    writer = Redis.from_url(fake_server)
    await writer.flushall()
    s = Setup(ReplyRouter(LeanRedis(writer, blocking=True), STREAM), writer)
    try:
        yield s
        if s.task is not None:
            assert not s.task.done(), "the reader task died"
    finally:
        if s.task is not None and not s.task.done():
            s.task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await s.task
        await s.router.aclose()
        await s.writer.aclose()


def fail_connections(router: ReplyRouter, monkeypatch: pytest.MonkeyPatch, error: Exception) -> asyncio.Event:
    """The reader's next command (a plain read or a trim and read alike) raises `error`, once;
    the event is set when it did."""
    lean = router.redis
    failed = asyncio.Event()

    def failing(real: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def command(*args: Any) -> Any:
            if not failed.is_set():
                failed.set()
                raise error
            return await real(*args)

        return command

    monkeypatch.setattr(lean, "execute", failing(lean.execute))
    monkeypatch.setattr(lean, "execute_many", failing(lean.execute_many))
    return failed


async def test_a_future_gets_its_reply(setup: Setup) -> None:
    setup.start()
    future = setup.router.expect("job-1")
    assert len(setup.router) == 1
    reply = Reply("job-1", status=200, body=b'{"id":"c1"}', prompt_tokens=3, completion_tokens=5)
    await setup.send(reply)
    assert await setup.soon(future) == reply
    assert len(setup.router) == 0


async def test_replies_sent_before_the_reader_started_are_delivered(setup: Setup) -> None:
    futures = {job: setup.router.expect(job) for job in ("a", "b", "c")}
    for job in ("c", "a", "b"):
        await setup.send(Reply(job, body=job.encode()))
    setup.start()
    for job, future in futures.items():
        assert (await setup.soon(future)).body == job.encode()


async def test_a_stream_gets_its_chunks_in_order_and_its_waiter_goes_after_the_last_reply(
    setup: Setup,
) -> None:
    setup.start()
    queue = setup.router.expect_stream("s1")
    other = setup.router.expect("other")
    sent = [Reply("s1", kind="chunk", body=f"chunk {i}".encode()) for i in range(5)]
    sent.append(Reply("s1", kind="chunk", body=b"usage", usage_chunk=True))
    sent.append(Reply("s1", kind="done", body=b'{"object":"chat.completion"}'))
    for reply in sent:
        await setup.send(reply)
    received = [await setup.soon(queue.get()) for _ in sent]
    assert received == sent
    assert len(setup.router) == 1  # only `other` still waits
    # After its last reply, nothing more reaches the stream's queue.
    await setup.send(Reply("s1", kind="chunk", body=b"late"))
    await setup.barrier()
    assert queue.empty()
    assert not other.done() and len(setup.router) == 1


@pytest.mark.parametrize("last", ["error", "final"])
async def test_an_error_or_final_reply_also_ends_a_stream(setup: Setup, last: str) -> None:
    setup.start()
    queue = setup.router.expect_stream("s2")
    await setup.send(Reply("s2", kind="chunk", body=b"c"))
    await setup.send(Reply("s2", kind=last, status=502, body=b"err"))  # type: ignore[arg-type]
    assert [(await setup.soon(queue.get())).kind for _ in range(2)] == ["chunk", last]
    assert len(setup.router) == 0


async def test_replies_of_forgotten_and_unknown_jobs_are_dropped(setup: Setup) -> None:
    setup.start()
    forgotten = setup.router.expect("gone")
    forgotten_stream = setup.router.expect_stream("gone-stream")
    setup.router.forget("gone")
    setup.router.forget("gone-stream")
    setup.router.forget("never-existed")  # forgetting twice or an unknown job is harmless
    assert len(setup.router) == 0
    await setup.send(Reply("gone"))
    await setup.send(Reply("gone-stream", kind="chunk"))
    await setup.send(Reply("nobody-asked"))
    await setup.barrier()
    assert not forgotten.done() and forgotten_stream.empty()


async def test_a_reply_to_a_future_already_cancelled_does_not_stop_the_reader(setup: Setup) -> None:
    setup.start()
    future = setup.router.expect("cancelled")
    future.cancel()  # e.g. the request's task was cancelled before it could forget the job
    await setup.send(Reply("cancelled"))
    await setup.barrier()


async def test_undecodable_entries_are_skipped_and_later_ones_delivered(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.start()
    future = setup.router.expect("after")
    with caplog.at_level(logging.ERROR, logger="edge.front"):
        await setup.send_raw(b"\xc1 not msgpack")
        await setup.send_raw(msgspec.msgpack.encode({"kind": "final"}))  # no job_id
        await setup.send_raw(msgspec.msgpack.encode({"job_id": "after", "kind": "bogus"}))
        await setup.send_unpublished({b"other": b"field"})  # no reply field at all: skipped
        await setup.send(Reply("after", body=b"ok"))
        assert (await setup.soon(future)).body == b"ok"
    undecodable = [r for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(undecodable) == 3


async def test_the_reader_survives_a_redis_error_and_resumes_where_it_was(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    setup.start()
    queue = setup.router.expect_stream("s3")
    await setup.send(Reply("s3", kind="chunk", body=b"before"))
    assert (await setup.soon(queue.get())).body == b"before"

    failed = fail_connections(setup.router, monkeypatch, RedisConnectionError("redis went away"))
    with caplog.at_level(logging.WARNING, logger="edge.front"):
        await setup.send(Reply("nobody", body=b"wakes the reader"))
        await setup.soon(failed.wait())
        await setup.send(Reply("s3", kind="chunk", body=b"after"))
        await setup.send(Reply("s3", kind="done", body=b"{}"))
        # Resumed after the last entry it handled: nothing twice, nothing lost.
        assert [(await setup.soon(queue.get())).body for _ in range(2)] == [b"after", b"{}"]
    assert any("reply stream read failed" in r.getMessage() for r in caplog.records)
    await setup.barrier()
    assert queue.empty()


async def test_the_reader_survives_an_unexpected_exception(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    failed = fail_connections(setup.router, monkeypatch, ValueError("surprise"))
    future = setup.router.expect("j")
    setup.start()
    await setup.soon(failed.wait())
    await setup.send(Reply("j", body=b"still here"))
    assert (await setup.soon(future)).body == b"still here"


async def test_a_reply_missed_by_the_push_is_read_from_the_stream(setup: Setup) -> None:
    """Published while the reader was not subscribed (or not published at all): the stream has it."""
    setup.start()
    future = setup.router.expect("unpushed")
    await setup.send_unpublished({b"r": encode_reply(Reply("unpushed", body=b"read"))})
    assert (await setup.soon(future)).body == b"read"


async def test_a_reply_pushed_twice_or_pushed_and_read_is_handed_over_once(setup: Setup) -> None:
    setup.start()
    queue = setup.router.expect_stream("s4")
    data = encode_reply(Reply("s4", kind="chunk", body=b"once"))
    entry_id = await setup.writer.xadd(STREAM, {b"r": data})
    await setup.writer.publish(STREAM, entry_id + b"  " + data)
    assert (await setup.soon(queue.get())).body == b"once"
    await setup.writer.publish(STREAM, entry_id + b"  " + data)  # again
    await setup.router._read_behind()  # and the stream read: it is there too
    await setup.barrier()
    assert queue.empty()


async def test_what_was_handed_over_is_trimmed_from_the_stream(setup: Setup) -> None:
    setup.start()
    for n in range(3):
        await setup.barrier(f"b{n}")
    for _ in range(100):  # the once-a-second trim, with room for a slow machine
        if await setup.writer.xlen(STREAM) <= 1:
            break
        await asyncio.sleep(0.1)
    assert await setup.writer.xlen(STREAM) <= 1  # MINID after the last one read


async def test_a_subscription_the_primary_does_not_see_is_opened_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a failover the subscription may be on the demoted primary: once the once-a-second
    check (PUBSUB NUMSUB on the primary) says nobody listens, the reader subscribes anew."""
    setup.start()
    await setup.barrier("first")
    lean = setup.router.redis
    real_many, real_execute = lean.execute_many, LeanRedis.execute
    unseen = asyncio.Event()
    subscribed: list[tuple[Any, ...]] = []

    async def primary_sees_none(commands: list[tuple[Any, ...]]) -> list[Any]:
        replies = await real_many(commands)
        if not unseen.is_set() and commands[0][:2] == ("PUBSUB", "NUMSUB"):
            unseen.set()
            replies[0] = [replies[0][0], 0]
        return replies

    async def counting(self: LeanRedis, *args: Any) -> Any:
        if args[:1] == ("SUBSCRIBE",):
            subscribed.append(args)
        return await real_execute(self, *args)

    monkeypatch.setattr(lean, "execute_many", primary_sees_none)
    monkeypatch.setattr(LeanRedis, "execute", counting)
    await setup.soon(unseen.wait())
    await setup.barrier("after")  # handed over through the new subscription, or read
    for _ in range(100):
        if subscribed:
            break
        await asyncio.sleep(0.05)
    assert subscribed == [("SUBSCRIBE", STREAM)]
