"""A streamed answer: upstream SSE in, one chunk (OpenAI's, or an Anthropic event for a Messages
client) out per upstream event, as it arrives.

Each chunk is appended to the waiting front's reply stream the moment it is translated (no
batching, so the gateway adds no buffering delay). The chunks are also assembled into a whole
chat.completion, which is cached only when the stream really completed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

import aiohttp
import msgspec

from edge_workers import metrics
from edge_workers.estimate import estimate_usage
from edge_workers.joblog import log_failure
from edge_workers.providers import ADAPTERS
from edge_workers.providers.base import Adapter, StreamError, StreamTranslator, UpstreamRequest
from edge_workers.publishing import Attempt, Publication, Publish
from edge_workers.upstream import (
    BodyTooLarge,
    Outcome,
    call_timeout,
    error_outcome,
    prepare_call,
    read_body,
    retry_after_of,
    timed_out,
    too_large,
)
from shared.breaker import outcome_of
from shared.chunks import ChunkAssembler
from shared.config import Deployment
from shared.errors import error_body
from shared.pricing import cost_usd
from shared.queue import Job, Reply
from shared.sse import EventTooLarge
from shared.wire import ChatCompletionChunk, Usage

_encode = msgspec.json.Encoder().encode


class AnswerStream(Protocol):
    """One streamed answer in the shape its client asked for (chat chunks, Anthropic events)."""

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, bool]]:
        """One upstream SSE event -> the bodies to forward, each with whether it carries only
        usage (for stream_options.include_usage). Raises StreamError for an error event."""
        ...

    @property
    def finished(self) -> bool:
        """The upstream completed the answer: it is whole and may be cached."""
        ...

    @property
    def usage(self) -> Usage | None: ...

    def answer(self) -> bytes:
        """The whole answer, as a non-streamed call would have given it."""
        ...


class ChatAnswerStream:
    """A chat-completions client's stream: the adapter's chunks, assembled for the cache."""

    def __init__(self, translator: StreamTranslator) -> None:
        self._translator = translator
        self._assembler = ChunkAssembler()

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, bool]]:
        out = []
        for raw_chunk, chunk in self._translator.feed(event, data):
            self._assembler.add(chunk)
            out.append((raw_chunk, not chunk.choices and chunk.usage is not None))
        return out

    @property
    def finished(self) -> bool:
        return self._translator.finished and self._assembler.complete

    @property
    def usage(self) -> Usage | None:
        return self._assembler.usage

    def answer(self) -> bytes:
        return _encode(self._assembler.completion())

    def estimate_usage(self, body: dict[str, Any], deployment_id: str) -> bytes | None:
        """When the upstream sent no usage (a server without stream_options): estimate it, keep
        it for the cached answer, and return the usage-only chunk the stream would have ended
        with. None when the upstream did send usage."""
        assembler = self._assembler
        if assembler.usage is not None:
            return None
        assembler.usage = estimate_usage(body, assembler.completion(), deployment_id)
        chunk = ChatCompletionChunk(
            id=assembler.id,
            created=assembler.created,
            model=assembler.model,
            choices=[],
            usage=assembler.usage,
        )
        return _encode(chunk)


class _Stream:
    def __init__(self, job: Job, publish: Publish) -> None:
        self.job = job
        self.job_id = job.job_id
        self.publish = publish
        self.client_deadline = job.client_deadline  # a timeout then says nothing about the upstream
        self.started = False  # a chunk went out: errors must now travel inside the stream
        self.attempted = False  # the upstream was called (its failures count against it)
        self.called_at = 0.0
        self.first_byte_ms = -1.0

    async def chunks(self, stream: AnswerStream, events: Iterable[tuple[str, bytes]]) -> None:
        """Forward the chunks of every event that arrived in one network read, in one round trip."""
        replies = []
        try:
            for event, payload in events:
                for body, usage_only in stream.feed(event, payload):
                    replies.append(Reply(self.job_id, kind="chunk", body=body, usage_chunk=usage_only))
        finally:
            # Chunks that came before an error event in the same read still go out first.
            if replies:
                first = not self.started
                self.started = True
                await self.publish(Publication(replies, first_chunks=first))

    async def fail(
        self, status: int, body: bytes, retry_after: float | None = None, deadline: bool = False
    ) -> str:
        if self.started:
            reply = Reply(self.job_id, kind="error", status=status, body=body)
        else:  # nothing sent yet: the client gets a plain HTTP error
            reply = Reply(self.job_id, kind="final", status=status, body=body, retry_after=retry_after)
        attempt = Attempt(outcome_of(status, self.attempted and not (deadline and self.client_deadline)))
        await self.publish(Publication([reply], attempt=attempt))
        log_failure(self.job, status, body)  # after the answer: the log is not in its way
        return str(status)


async def stream_answer(
    session: aiohttp.ClientSession,
    deployment: Deployment,
    api_key: str,
    job: Job,
    body: dict[str, Any],
    publish: Publish,
    cache: bool,
    limits: tuple[int, int],
    adapter: Adapter | None = None,
    answer_stream: AnswerStream | None = None,
    built: UpstreamRequest | None = None,
) -> str:
    """Run one streamed answer to its end; returns the outcome for metrics (status or "ok").
    `limits`: the most bytes the whole stream, and one line of it, may have. `adapter` and
    `answer_stream` (default: the provider's, chat chunks) are the request's shape; `built` its
    request, if built already."""
    adapter = adapter or ADAPTERS[deployment.provider]
    out = _Stream(job, publish)
    prepared = prepare_call(deployment, api_key, job.upstream_model, body, job.deadline, True, adapter, built)
    if isinstance(prepared, Outcome):
        return await out.fail(prepared.status, prepared.body, deadline=prepared.deadline)
    request, remaining = prepared
    max_body, max_line = limits
    out.attempted, out.called_at = True, time.perf_counter()
    try:
        async with session.post(
            request.target,
            data=request.body,
            headers=request.headers,
            timeout=call_timeout(session, remaining),
        ) as response:
            if response.status >= 300:
                raw = await read_body(response, max_body)
                failed: Outcome = error_outcome(
                    deployment, response.status, raw, retry_after_of(response.headers), adapter
                )
                return await out.fail(failed.status, failed.body, failed.retry_after)
            stream = answer_stream or ChatAnswerStream(adapter.stream_translator(job.upstream_model))
            parser = adapter.stream_parser(max_line)
            out.first_byte_ms = (time.perf_counter() - out.called_at) * 1000
            received = 0
            async for data in response.content.iter_any():
                received += len(data)
                if received > max_body:
                    raise BodyTooLarge
                await out.chunks(stream, parser.feed_bytes(data))
            await out.chunks(stream, parser.flush())
    except (BodyTooLarge, EventTooLarge) as e:
        failed = too_large(deployment, max_line if isinstance(e, EventTooLarge) else max_body)
        return await out.fail(failed.status, failed.body)
    except StreamError as e:
        d = e.detail
        status = e.status if out.started else (e.status if 400 <= e.status < 500 else 502)
        return await out.fail(status, error_body(status, d.message, d.type, d.param, d.code))
    except aiohttp.ConnectionTimeoutError:  # the upstream's own failure, whatever the deadline
        message = f"upstream {deployment.provider} did not accept a connection in time"
        return await out.fail(504, error_body(504, message))
    except TimeoutError:
        failed = timed_out(deployment, job.deadline)
        return await out.fail(failed.status, failed.body, deadline=failed.deadline)
    except aiohttp.ClientError as e:
        what = "dropped the stream" if out.started else "connection failed"
        return await out.fail(
            502, error_body(502, f"upstream {deployment.provider} {what}: {type(e).__name__}")
        )
    if not stream.finished:
        return await out.fail(502, error_body(502, f"upstream {deployment.provider} ended the stream early"))
    replies: list[Reply] = []
    if isinstance(stream, ChatAnswerStream):
        usage_chunk = stream.estimate_usage(body, deployment.id)
        if usage_chunk is not None:
            replies.append(Reply(job.job_id, kind="chunk", body=usage_chunk, usage_chunk=True))
    completion = stream.answer()
    usage = stream.usage
    cost = cost_usd(deployment.provider, job.upstream_model, usage, deployment)
    done = Reply(
        job.job_id,
        kind="done",
        body=completion,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
        cost_usd=cost,
    )
    replies.append(done)
    await publish(Publication(replies, completion if cache else None, cost, Attempt("ok", out.first_byte_ms)))
    if cost:
        metrics.COST.labels(deployment.provider, job.upstream_model).inc(cost)
    return "ok"
