"""Streamed answers to the client as server-sent events, in OpenAI's chunk format.

Live: each chunk a worker publishes is written to the client as soon as the reply reader hands
it over; chunks that arrived together go out in one write. If the client disconnects, the job
is cancelled (the worker stops the upstream call) and nothing is cached. From the cache: a
stored completion is replayed as the chunk sequence OpenAI would have sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
from starlette.types import Receive, Send

from edge_front import metrics
from edge_front import tracing as front_tracing
from edge_front.state import FrontState
from shared import tracing
from shared.chunks import replay_chunks
from shared.costs import format_usd
from shared.errors import deadline_body, error_body
from shared.queue import Job, Reply
from shared.sse import DONE, frame

log = logging.getLogger("edge.front")
_encode = msgspec.json.Encoder().encode
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # tell proxies in front of us not to buffer either
]


@dataclass(frozen=True)
class Framing:
    """How an API's stream is written: a chunk reply's body, the end after the cost comment, and
    the event an error (the gateway's envelope, with its status) ends a started stream with."""

    chunk: Callable[[bytes], bytes]
    end: bytes
    error: Callable[[int, bytes], bytes]


CHAT_SSE = Framing(frame, DONE, lambda status, body: frame(body))


@dataclass
class LiveStream:
    """A streamed answer whose first reply was a chunk: the response can start."""

    job: Job
    replies: asyncio.Queue[Reply | None]
    first: Reply
    include_usage: bool
    cache_key: str | None  # where to keep the completed answer in L1, if anywhere
    watcher: asyncio.Task[None]  # puts None in `replies` when the client disconnects
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # which deployment serves it
    started: float = 0.0  # perf_counter() when the request came (for time to first token)
    # (cache key, member) when the request joined another's flight: leaving is all it may do.
    follow: tuple[str, str] | None = None
    framing: Framing = CHAT_SSE


def replay_body(completion: bytes, include_usage: bool) -> bytes:
    """A cached completion as the SSE body OpenAI would have streamed. Raises msgspec's errors
    for an entry that is not a chat completion (the caller treats it as a miss)."""
    return b"".join(frame(_encode(chunk)) for chunk in replay_chunks(completion, include_usage)) + DONE


async def send_sse(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})


async def relay(
    state: FrontState, live: LiveStream, send: Send, headers: list[tuple[bytes, bytes]]
) -> tuple[int, int, float]:
    """Write the live stream to the client; returns the (prompt, completion) tokens it used and
    its cost in USD.
    Never raises but for cancellation: once the response started, every failure ends the
    stream with an error event, and the job is cancelled unless it finished."""
    finished = False
    try:
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
        async with asyncio.timeout(live.job.deadline - time.time()):
            used, finished = await _pump(state, live, send)
        return used
    except TimeoutError:
        await _end_with(send, live.framing.error(504, deadline_body()))
    except OSError:
        pass  # the client's connection failed: nobody to tell
    except Exception:
        log.exception(
            "request %s: relaying the stream failed",
            live.job.request_id,
            extra={"request_id": live.job.request_id},
        )
        failed = error_body(500, "The gateway failed while relaying this stream.")
        await _end_with(send, live.framing.error(500, failed))
    finally:
        live.watcher.cancel()
        state.replies.forget(live.job.job_id)
        if not finished:
            if live.follow is not None:
                await state.leave(*live.follow)
            else:
                await state.cancel(live.job)
    return 0, 0, 0.0


async def _end_with(send: Send, event: bytes) -> None:
    try:
        await send({"type": "http.response.body", "body": event, "more_body": False})
    except Exception:
        pass  # the client is gone too


async def _pump(state: FrontState, live: LiveStream, send: Send) -> tuple[tuple[int, int, float], bool]:
    """((prompt tokens, completion tokens, cost), whether the job finished: answered or failed,
    nothing left to cancel)."""
    pending: list[Reply | None] = [live.first]
    gaps = metrics.STREAM_CHUNK_GAP.labels(live.job.provider)
    last_write = 0.0
    while True:
        # Everything that already arrived goes out in one write; then wait for the next reply.
        while not live.replies.empty():
            pending.append(live.replies.get_nowait())
        out = b""
        for reply in pending:
            if reply is None or reply.kind != "chunk":
                if out:
                    await send({"type": "http.response.body", "body": out, "more_body": True})
                return await _finish(state, live, send, reply)
            if live.include_usage or not reply.usage_chunk:
                out += live.framing.chunk(reply.body)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})
            now = time.perf_counter()
            if last_write:
                gaps.observe((now - last_write) * 1000)
            elif live.started:
                metrics.STREAM_TTFT.labels(live.job.provider).observe((now - live.started) * 1000)
                if tracing.ON:
                    front_tracing.first_token(live.started)
            last_write = now
        pending = [await live.replies.get()]


async def _finish(
    state: FrontState, live: LiveStream, send: Send, reply: Reply | None
) -> tuple[tuple[int, int, float], bool]:
    if reply is None:  # the client went away: the caller stops paying for tokens nobody reads
        metrics.CLIENT_DISCONNECTS.inc()
        return (0, 0, 0.0), False
    if reply.kind == "done":
        if live.cache_key is not None:
            if tracing.ON:
                front_tracing.cache_write(
                    state.l1, live.cache_key, reply.body, reply.cost_usd, live.job.cache_ttl_s
                )
            else:
                state.l1.set(live.cache_key, reply.body, reply.cost_usd, ttl_s=live.job.cache_ttl_s)
        # Headers went out with the first chunk, before the cost was known: it comes last, as an
        # SSE comment, which clients (the OpenAI SDKs included) skip.
        cost = b": x-edge-cost-usd=" + format_usd(reply.cost_usd) + b"\n\n"
        await send({"type": "http.response.body", "body": cost + live.framing.end, "more_body": False})
        return (reply.prompt_tokens, reply.completion_tokens, reply.cost_usd), True
    # An error after the stream began travels inside it, in the API's shape, and ends it.
    log.info(
        "request %s: stream failed with %d",
        live.job.request_id,
        reply.status,
        extra={"request_id": live.job.request_id, "status": reply.status, "provider": live.job.provider},
    )
    end = live.framing.error(reply.status, reply.body)
    await send({"type": "http.response.body", "body": end, "more_body": False})
    return (0, 0, 0.0), True


async def watch_disconnect(receive: Receive, replies: asyncio.Queue[Reply | None]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    replies.put_nowait(None)
