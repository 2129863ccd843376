"""A lean Redis connection for the commands on a miss's path.

redis-py's asyncio client costs 23-30 µs of CPU per command there: a pool checkout that first
tries a zero-timeout read (an event-loop turn), a retry closure, packing in Python, response
callbacks. py-spy put about half of the front's and of the worker's CPU per miss inside it. This
connection keeps only what those few commands need: hiredis packs and parses (the C parser
redis-py itself uses), and replies are matched to commands in the order they were sent, so
concurrent callers share one connection and their commands are pipelined.

It connects where the redis-py client it is made from connects (`LeanRedis(client)`): that
client's address or the primary Sentinel names, its credentials, database, TLS, client name
and timeouts. Everything else (administration, recovery, the rare paths) stays on redis-py.

Failures look like redis-py's, so callers keep their handling:
- the connection lost: ConnectionError for every command waiting on it; the next command
  opens a new connection (nothing is sent twice);
- no reply within the client's `socket_timeout`: TimeoutError, and the connection is closed;
- an error reply: redis-py's exception for it (NoScriptError, ResponseError, ...), raised by
  `execute`, returned in place by `execute_many`, as a redis-py pipeline returns it;
- READONLY (a demoted primary after a failover): the connection is closed and ConnectionError
  raised, as redis-py's Sentinel connections do, so the next command asks Sentinel again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import hiredis
from redis._parsers.base import BaseParser
from redis.asyncio import Redis
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    InvalidResponse,
    NoScriptError,
    ReadOnlyError,
    RedisError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

_pack = hiredis.pack_command


class _Protocol(asyncio.Protocol):
    """One connection: commands written in order, each reply handed to the oldest waiter."""

    def __init__(self, on_push: Callable[[bytes], None] | None = None) -> None:
        self.reader = hiredis.Reader(protocolError=InvalidResponse, replyError=BaseParser.parse_error)
        self.on_push = on_push  # a subscribed connection's messages (their payloads) go here
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.sent_at: deque[float] = deque()  # when each waiter's command went out (timeouts)
        self.transport: asyncio.Transport | None = None
        self.lost: RedisError | None = None  # set once the connection is gone: why
        self.timer: asyncio.TimerHandle | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader, waiting, sent_at, on_push = self.reader, self.waiting, self.sent_at, self.on_push
        reader.feed(data)
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as e:
                self.fail(RedisConnectionError(f"Protocol error from Redis: {e}"))
                return
            if reply is False:
                return
            if on_push is not None and type(reply) is list and len(reply) == 3 and reply[0] == b"message":
                on_push(reply[2])
                continue
            if not waiting:  # a reply nobody asked for: this connection cannot be trusted
                self.fail(RedisConnectionError("Unexpected reply from Redis"))
                return
            future = waiting.popleft()
            sent_at.popleft()
            if not future.done():  # its caller may have given up (cancelled)
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(self.lost or RedisConnectionError("Connection closed by server."))

    def fail(self, error: RedisError) -> None:
        """End the connection: `error` for every command still waiting."""
        self._end(error)
        if self.transport is not None:
            self.transport.abort()

    def _end(self, error: RedisError) -> None:
        if self.lost is None:
            self.lost = error
        if not self.closed.done():
            self.closed.set_result(None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)
        self.sent_at.clear()


class LeanRedis:
    """One connection to the Redis of `client` (a redis-py client), for hot-path commands."""

    def __init__(
        self, client: Redis, *, blocking: bool = False, on_push: Callable[[bytes], None] | None = None
    ) -> None:
        """`blocking`: for blocking reads (XREAD BLOCK) and subscriptions: no reply timeout (the
        block bounds it). `on_push`: called with each message's payload once the connection is
        subscribed (SUBSCRIBE through `execute`)."""
        self._on_push = on_push
        self.client = client  # for what is not on the hot path (and a pipeline's commands)
        self._pool = client.connection_pool
        # A redis-py connection that is never opened: it says where and how to connect.
        self._params: Any = self._pool.connection_class(**self._pool.connection_kwargs)
        self._timeout: float | None = None if blocking else self._params.socket_timeout
        self._protocol: _Protocol | None = None
        self._opening: asyncio.Future[_Protocol] | None = None

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply (an error reply raised)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        reply = await self._send(protocol, _pack(args), 1)[-1]
        if isinstance(reply, RedisError):  # an error reply (not all are ResponseErrors)
            raise self._error(protocol, reply)
        return reply

    def send_now(self, *args: Any) -> asyncio.Future[Any] | None:
        """Write one command at once, without a loop turn: the future of its reply (an error
        reply is its result, see `raise_for`); None when no connection is open (use `execute`)."""
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            return None
        return self._send(protocol, _pack(args), 1)[-1]

    def raise_for(self, reply: Any) -> Any:
        """`reply`, or the error it is raised (READONLY closing the connection, as `execute`)."""
        if isinstance(reply, RedisError):
            protocol = self._protocol
            if protocol is None:
                raise reply
            raise self._error(protocol, reply)
        return reply

    async def execute_many(self, commands: Iterable[Sequence[Any]]) -> list[Any]:
        """Send the commands in one write; their replies, in order (error replies in place; a
        lost connection or a timeout raised)."""
        packed = [_pack(tuple(args)) for args in commands]
        if not packed:
            return []
        protocol = self._protocol
        if protocol is None or protocol.lost is not None:
            protocol = await self._connect()
        futures = self._send(protocol, b"".join(packed), len(packed))
        await futures[-1]  # replies come in order: every earlier one is in by then
        replies = [future.result() for future in futures]
        for reply in replies:
            if isinstance(reply, ReadOnlyError):
                raise self._error(protocol, reply)
        return replies

    async def wait_closed(self) -> None:
        """Return once the open connection is gone (at once when none is open)."""
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            await asyncio.shield(protocol.closed)

    async def aclose(self) -> None:
        if self._opening is not None:
            self._opening.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.fail(RedisConnectionError("Connection closed by the gateway."))

    def _send(self, protocol: _Protocol, data: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Write `data` (`count` commands); the futures of their replies."""
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in range(count)]
        protocol.waiting.extend(futures)
        protocol.sent_at.extend([now] * count)
        assert protocol.transport is not None
        protocol.transport.write(data)
        if self._timeout is not None and protocol.timer is None:
            protocol.timer = loop.call_at(now + self._timeout, self._check_timeout, protocol)
        return futures

    def _check_timeout(self, protocol: _Protocol) -> None:
        """The oldest command's reply is due: time out, or look again when the next one is."""
        protocol.timer = None
        if not protocol.sent_at or self._timeout is None:
            return
        due = protocol.sent_at[0] + self._timeout
        if time.monotonic() >= due:
            protocol.fail(RedisTimeoutError(f"Timeout reading from {self._describe()}"))
        else:
            protocol.timer = asyncio.get_running_loop().call_at(due, self._check_timeout, protocol)

    def _error(self, protocol: _Protocol, reply: RedisError) -> RedisError:
        if isinstance(reply, ReadOnlyError):
            error = RedisConnectionError("The Redis primary became a replica (failover)")
            protocol.fail(error)
            return error
        return reply

    async def _connect(self) -> _Protocol:
        """A new connection, opened once for every caller that needs it meanwhile: when Redis
        does not answer, they all fail with the first attempt, not one attempt after another."""
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[_Protocol]) -> None:
        self._opening = None
        if not opening.cancelled() and opening.exception() is None:
            self._protocol = opening.result()

    async def _open(self) -> _Protocol:
        params = self._params
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(params.socket_connect_timeout):
                path = getattr(params, "path", None)
                new = functools.partial(_Protocol, self._on_push)
                if path is not None:
                    _, protocol = await loop.create_unix_connection(new, path)
                else:
                    if isinstance(self._pool, SentinelConnectionPool):
                        host, port = await self._pool.get_master_address()
                    else:
                        host, port = params.host, params.port
                    context = getattr(params, "ssl_context", None)
                    _, protocol = await loop.create_connection(
                        new, host, port, ssl=context.get() if context is not None else None
                    )
                if getattr(params, "socket_keepalive", False) and protocol.transport is not None:
                    sock = protocol.transport.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                await self._handshake(protocol)
        except (OSError, TimeoutError) as e:
            where = self._describe()
            raise RedisConnectionError(f"Error connecting to {where}: {type(e).__name__}") from None
        return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        params = self._params
        commands: list[tuple[Any, ...]] = []
        if params.password:
            commands.append(
                ("AUTH", params.username, params.password) if params.username else ("AUTH", params.password)
            )
        if params.db:
            commands.append(("SELECT", params.db))
        if params.client_name:
            commands.append(("CLIENT", "SETNAME", params.client_name))
        if not commands:
            return
        futures = self._send(protocol, b"".join(_pack(c) for c in commands), len(commands))
        await futures[-1]
        for future in futures:
            reply = future.result()
            if isinstance(reply, RedisError):
                protocol.fail(RedisConnectionError("Redis refused the connection's set-up"))
                raise reply

    def _describe(self) -> str:
        path = getattr(self._params, "path", None)
        return f"unix:{path}" if path else f"{self._params.host}:{self._params.port}"


# Sent ahead of a command, in the same write, so that the sender's reply leaves Redis after
# whatever the command PUBLISHes. Redis writes its pending output newest client first (Redis
# 6.2 and 7: `clients_pending_write` is pushed at its head): a script that publishes to a
# subscriber and then replies would wake its sender before the subscriber, whose message is the
# one on the request's path. With PING's reply already pending, the sender's client is in the
# list before the subscriber's, so the subscriber's message goes out first. Measured with
# ops/miss_timeline.py (2026-12-05, 3 alternating pairs): Redis's two stages on a miss's path
# 127 -> 104 and 153 -> 120 µs.
PUSH_FIRST = ("PING",)


class LeanScript:
    """A Lua script run by EVALSHA on a LeanRedis, loaded when Redis lacks it (after a restart).
    `push_first`: each call sends PUSH_FIRST ahead of its EVALSHA (a script that PUBLISHes the
    message a request waits for, whose reply its sender does not need as urgently)."""

    def __init__(self, text: str, push_first: bool = False) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode()).hexdigest()
        self.push_first = push_first

    def start(self, redis: LeanRedis, keys: Sequence[Any], args: Sequence[Any]) -> Awaitable[Any]:
        """The script's reply, its EVALSHA written now when a connection is open: what the caller
        does before awaiting it overlaps the round trip."""
        return self._finish(redis, redis.send_now("EVALSHA", self.sha, len(keys), *keys, *args), keys, args)

    async def _finish(
        self, redis: LeanRedis, sent: asyncio.Future[Any] | None, keys: Sequence[Any], args: Sequence[Any]
    ) -> Any:
        if sent is None:
            return await self(redis, keys, args)
        reply = await sent
        if isinstance(reply, NoScriptError):  # nothing ran: load it and run it
            return await self(redis, keys, args)
        return redis.raise_for(reply)

    async def __call__(self, redis: LeanRedis, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        try:
            if self.push_first:
                reply = (
                    await redis.execute_many([PUSH_FIRST, ("EVALSHA", self.sha, len(keys), *keys, *args)])
                )[1]
                if isinstance(reply, NoScriptError):
                    raise reply
                return redis.raise_for(reply)
            return await redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await redis.execute("SCRIPT", "LOAD", self.text)
            return await redis.execute("EVALSHA", self.sha, len(keys), *keys, *args)


def stream_entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """XREAD's raw reply for one stream as redis-py gives it: [(entry id, {field: value})]."""
    if not reply:
        return []
    return _entries(reply[0][1])


def streams_entries(reply: Any) -> dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]]:
    """XREAD's raw reply for several streams: stream name -> its entries (streams without new
    entries are not there)."""
    return {name: _entries(raw) for name, raw in reply or ()}


def _entries(raw: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return [(entry_id, dict(zip(fields[::2], fields[1::2], strict=True))) for entry_id, fields in raw]
