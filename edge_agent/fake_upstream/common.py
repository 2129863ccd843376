"""What both fake APIs share: settings, stats, the request pipeline and the SSE writer."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from edge_agent.fake_upstream.content import Markers, decode, last_user_text, parse_markers, strip_markers

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
JSON_CONTENT_TYPE = "application/json"
_RECORDED = frozenset({"x-api-key", "authorization"})


@dataclass(slots=True)
class Settings:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    require_key: str | None = None
    aws_checks: bool = True  # Bedrock: verify signatures and validate bodies (off: the bench)


@dataclass(slots=True)
class Stats:
    """Counters of one server, shown by `GET /_fake/stats` and cleared by `POST /_fake/reset`."""

    requests: int = 0
    cancelled: int = 0
    failures_injected: int = 0  # requests answered by a failure marker or by `error_rate`
    by_path: dict[str, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    by_field: dict[str, int] = field(default_factory=dict)  # top-level body fields received
    # (path, exact last user text) -> requests seen, for the `[[fake:times=N]]` marker
    times_seen: dict[tuple[str, str], int] = field(default_factory=dict)
    # path -> the auth and anthropic-* headers of its last request (to check what a gateway forwards)
    last_headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def reset(self) -> None:
        self.requests = 0
        self.cancelled = 0
        self.failures_injected = 0
        self.by_path.clear()
        self.by_model.clear()
        self.by_field.clear()
        self.times_seen.clear()
        self.last_headers.clear()

    def count_key(self, path: str, text: str) -> int:
        """Count one more request for the marker key (path, text); returns the new count."""
        key = (path, text)
        seen = self.times_seen.get(key, 0) + 1
        self.times_seen[key] = seen
        return seen

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "by_model": dict(self.by_model),
            "by_field": dict(self.by_field),
            "cancelled": self.cancelled,
            "failures_injected": self.failures_injected,
            "last_headers": {path: dict(headers) for path, headers in self.last_headers.items()},
        }


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(body), status=status, headers=headers, content_type=JSON_CONTENT_TYPE
    )


def drop_connection(request: web.Request) -> None:
    """Close the connection under the handler: the client sees a disconnect, not a response."""
    transport = request.transport
    if transport is not None:
        transport.close()


def format_seconds(seconds: float) -> str:
    """Seconds for a `retry-after` header: plain decimal (never exponent notation), e.g. 1, 0.3."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".")


class Streamer:
    """Writes SSE frames, applying the chunk delay and the stream error / drop markers.

    `content()` and `end_of_content()` return False once a marker ended the stream; the caller
    then returns the response without writing anything else.
    """

    def __init__(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        markers: Markers,
        error_frame: bytes,
        stats: Stats | None = None,
    ):
        self.request = request
        self.stats = stats
        self.resp = resp
        self.delay = markers.chunk_delay_ms / 1000
        self.error_after = markers.stream_error_after
        self.drop_after = markers.stream_drop_after
        self.error_frame = error_frame
        self.sent = 0  # content chunks written
        self.started = False

    async def frame(self, data: bytes) -> None:
        if self.delay and self.started:
            await asyncio.sleep(self.delay)
        self.started = True
        await self.resp.write(data)

    async def _interrupt(self) -> bool:
        if self.error_after is not None and self.sent >= self.error_after:
            self._count_failure()
            await self.frame(self.error_frame)
            return True
        if self.drop_after is not None and self.sent >= self.drop_after:
            self._count_failure()
            drop_connection(self.request)
            return True
        return False

    def _count_failure(self) -> None:
        if self.stats is not None:
            self.stats.failures_injected += 1

    async def content(self, data: bytes) -> bool:
        if await self._interrupt():
            return False
        await self.frame(data)
        self.sent += 1
        return True

    async def end_of_content(self) -> bool:
        """Fire a pending error / drop marker even when fewer content chunks were generated."""
        if self.error_after is not None:
            self.error_after = 0
        if self.drop_after is not None:
            self.drop_after = 0
        return not await self._interrupt()


class BaseApi:
    """The request pipeline; subclasses supply the provider's auth, validation, errors and answers."""

    retry_after_ms_header = False

    def __init__(self, settings: Settings, stats: Stats) -> None:
        self.settings = settings
        self.stats = stats

    # -- provider hooks -------------------------------------------------------------------------

    def check_headers(self, request: web.Request) -> web.Response | None:
        raise NotImplementedError

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        raise NotImplementedError

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> web.Response:
        raise NotImplementedError

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body["model"])

    def marker_text(self, body: dict[str, Any]) -> str:
        return last_user_text(body["messages"])

    def check_signed(self, request: web.Request, raw: bytes) -> web.Response | None:
        """A request signature over the body (Bedrock's SigV4); None: nothing to check."""
        return None

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        raise NotImplementedError

    # -- pipeline -------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.requests += 1
        path = request.path
        stats.by_path[path] = stats.by_path.get(path, 0) + 1
        stats.last_headers[path] = {
            name: value
            for name, value in request.headers.items()
            if name.lower() in _RECORDED or name.lower().startswith("anthropic-")
        }
        try:
            return await self._process(request)
        except (asyncio.CancelledError, ConnectionError):
            # The client went away: the handler was cancelled or a write failed.
            stats.cancelled += 1
            raise

    async def _process(self, request: web.Request) -> web.StreamResponse:
        rejected = self.check_headers(request)
        if rejected is not None:
            return rejected
        raw = await request.read()
        rejected = self.check_signed(request, raw)
        if rejected is not None:
            return rejected
        try:
            body = decode(raw)
        except msgspec.DecodeError:
            return self.error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict):
            return self.error(400, "The request body must be a JSON object.")
        rejected = self.validate(body)
        if rejected is not None:
            return rejected
        model = self.model_of(request, body)
        by_model = self.stats.by_model
        by_model[model] = by_model.get(model, 0) + 1
        for name in body:  # what the gateway forwarded (tests check what it must not)
            self.stats.by_field[name] = self.stats.by_field.get(name, 0) + 1

        text = self.marker_text(body)
        markers = parse_markers(text)
        if markers.times is not None:
            # Counted before any await, so concurrent requests with the same key are ordered.
            if self.stats.count_key(request.path, text) > markers.times:
                markers = markers.without_failures()
        settings = self.settings
        delay_ms = settings.latency_ms + markers.delay_ms
        if settings.jitter_ms > 0:
            delay_ms += random.uniform(0, settings.jitter_ms)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if markers.timeout:
            self.stats.failures_injected += 1
            await asyncio.sleep(3600)
        if markers.drop:
            self.stats.failures_injected += 1
            drop_connection(request)
            return web.Response()
        if markers.reject_fields:
            sent = sorted(set(markers.reject_fields.split(",")) & body.keys())
            if sent:
                return self.error(422, f"Extra inputs are not permitted: {', '.join(sent)}")
        if markers.status is not None:
            self.stats.failures_injected += 1
            echoed = f"Refused prompt: {strip_markers(text).strip()}" if markers.echo_error else None
            return self.status_error(markers.status, markers.retry_after, markers.error_code, echoed)
        hostile = await hostile_response(request, markers)
        if hostile is not None:
            self.stats.failures_injected += 1
            return hostile
        if settings.error_rate > 0 and random.random() < settings.error_rate:
            self.stats.failures_injected += 1
            return self.status_error(settings.error_status, markers.retry_after)
        return await self.respond(request, body, strip_markers(text), markers)

    def status_error(
        self, status: int, retry_after: float | None, code: str | None = None, message: str | None = None
    ) -> web.Response:
        headers: dict[str, str] | None = None
        if status == 429 or retry_after is not None:
            seconds = 1.0 if retry_after is None else max(retry_after, 0.0)
            headers = {"retry-after": format_seconds(seconds)}
            if self.retry_after_ms_header:
                headers["retry-after-ms"] = str(round(seconds * 1000))
        return self.error(status, message, headers=headers, code=code)


_BAD_BODIES = {
    "error_200": b'{"error": {"message": "overloaded, try later", "type": "server_error"}}',
    "no_finish": (
        b'{"id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "m", "choices":'
        b' [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]}'
    ),
    "not_json": b"<html>upstream proxy error</html>",
}
_MIB = 1 << 20


async def hostile_response(request: web.Request, markers: Markers) -> web.StreamResponse | None:
    """A 2xx answer a broken or hostile upstream might send, when a marker asks for one."""
    if markers.bad_body is not None:
        return web.Response(body=_BAD_BODIES.get(markers.bad_body, b"{}"), content_type="application/json")
    size_mb = markers.huge_body_mb or markers.sse_no_newlines_mb
    if not size_mb:
        return None
    sse = markers.sse_no_newlines_mb is not None
    resp = web.StreamResponse(headers=SSE_HEADERS if sse else {"Content-Type": "application/json"})
    await resp.prepare(request)
    block = (b"data: " + b"x" * (_MIB - 6)) if sse else b"[" + b"1," * (_MIB // 2 - 1) + b"1"
    try:
        for _ in range(size_mb):
            await resp.write(block)
    except ConnectionError:
        pass  # the gateway gave up reading, as it should
    return resp
