"""The front's spans (only when `shared.tracing.ON`; the hot modules check it before calling).

One trace per API request: a SERVER span (continuing the client's W3C `traceparent` when it
sends one, and answered with `traceparent` and `x-trace-id` headers), child spans for its stages
(`cache_lookup` with `l1_get` and `l2_get`, `routing_decision`, `cache_write`,
`response_build`), and per attempt a PRODUCER span whose context travels in the job to the
worker. Attributes name the key by its public id and the cache tier; never a prompt or a key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import keyspace
from shared import tracing as t
from shared.config import Deployment
from shared.errors import EdgeError
from shared.queue import Job, Reply

if TYPE_CHECKING:  # both import this module
    from edge_front.access_log import RequestFacts

# The API: every path a client sends model requests to (not health probes, metrics, dashboard).
API_PREFIXES = (b"/v1/", b"/chat/")
Hit = tuple[str, bytes, float] | None  # (tier, answer, when it was stored)
R = TypeVar("R")


class TracedApp:
    """The front's ASGI app inside one SERVER span per API request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = (scope.get("raw_path") or scope.get("path", "").encode()).partition(b"?")[0]
        if scope["type"] != "http" or not path.startswith(API_PREFIXES):
            await self.app(scope, receive, send)
            return
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in (b"traceparent", b"tracestate")
        }
        method = scope["method"]
        route = path.decode("latin-1")
        span = t.start(
            f"{method} {route}",
            t.SERVER,
            {"http.request.method": method, "url.path": route},
            t.extract(carrier) if carrier else None,
        )
        token = t.enter(span)
        context = t.carrier_of()
        ours = [
            (b"traceparent", context["traceparent"].encode()),
            (b"x-trace-id", t.trace_id_hex(span).encode()),
        ]
        status = 0

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *ours]}
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except BaseException as e:
            span.record_exception(e)
            t.failed(span, type(e).__qualname__)
            raise
        finally:
            t.leave(token)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    t.failed(span, str(status))
                if status == 404:
                    span.update_name(method)  # not a route: the path could be anything
            span.end()


def request_facts(request_id: str, key_id: str | None, facts: RequestFacts) -> None:
    """What the request turned out to be, on its SERVER span (the current one)."""
    attributes: dict[str, Any] = {"edge.request_id": request_id, "edge.cache": facts.cache}
    if key_id is not None:
        attributes["edge.key_id"] = key_id  # the public id, never the key
    if facts.model:
        attributes["gen_ai.request.model"] = facts.model
    if facts.deployment:
        attributes["edge.deployment"] = facts.deployment
        attributes["edge.attempts"] = facts.attempts
    if facts.tokens:
        attributes["edge.tokens"] = facts.tokens
    t.current().set_attributes(attributes)


def first_token(started: float) -> None:
    """A stream's first chunk went to the client `started` (perf_counter) after the request came."""
    ms = (time.perf_counter() - started) * 1000
    span = t.current()
    span.set_attribute("edge.time_to_first_token_ms", ms)
    span.add_event("first_token", {"edge.time_to_first_token_ms": ms})


async def cache_lookup(
    state: Any,
    key: str,
    l1_get: Callable[[Any, str], Hit],
    l2_get: Callable[[Any, str], Awaitable[Hit]],
    l2: bool,
) -> Hit:
    """`edge_front.chat`'s lookup (L1, then L2 when it is on and `l2`), one span per stage. With
    L2 in the queue's Redis, the miss script looks there instead: in the PRODUCER span."""
    lookup = t.start("cache_lookup")
    inside = t.context_of(lookup)  # its children's parent, without making it current
    span = t.start("l1_get", parent=inside)
    hit = l1_get(state, key)
    span.end()
    if hit is None and l2 and state.settings.enable_l2_cache:
        span = t.start("l2_get", parent=inside)
        try:
            hit = await l2_get(state, key)
        finally:
            span.end()
    lookup.set_attribute("edge.cache", hit[0] if hit is not None else "miss")
    lookup.end()
    return hit


def cache_write(l1: Any, key: str, body: bytes, cost: float, ttl_s: float | None = None) -> None:
    span = t.start("cache_write", attributes={"edge.cache.tier": "l1"})
    l1.set(key, body, cost, None, ttl_s)  # stored now
    span.end()


def response_build() -> Any:
    """The span of writing the answer to the client (not current: a stream's first-token event
    belongs on the request's span); the caller ends it."""
    return t.start("response_build")


async def routing_decision(choice: Awaitable[tuple[Deployment, int]], attempt: int) -> tuple[Deployment, int]:
    span = t.start("routing_decision", attributes={"edge.attempt": attempt})
    try:
        deployment, index = await choice
    except EdgeError as e:
        t.failed(span, e.code or str(e.status))
        span.end()
        raise
    span.set_attribute("edge.deployment", deployment.id)
    span.end()
    return deployment, index


async def attempt(run: Awaitable[tuple[R, bool]], deployment: Deployment, number: int) -> tuple[R, bool]:
    """One attempt's PRODUCER span, current while it runs so that the job built inside carries
    its context (`job_context`); it ends with the attempt's answer (a stream: its first chunk).
    `run` gives (a Reply, a LiveStream or dispatch's L2Hit; whether it joined a flight)."""
    queue = keyspace.queue(deployment.provider)
    span = t.start(
        f"send {queue}",
        t.PRODUCER,
        {
            "messaging.system": "arq",
            "messaging.operation.type": "send",
            "messaging.destination.name": queue,
            "edge.attempt": number,
            "edge.deployment": deployment.id,
        },
    )
    token = t.enter(span)
    try:
        outcome = await run
    except BaseException as e:
        t.leave(token)
        t.failed(span, (e.code or str(e.status)) if isinstance(e, EdgeError) else type(e).__qualname__)
        span.end()
        raise
    t.leave(token)
    result, joined = outcome
    if joined:  # single flight: the answer comes from an identical request's job (its trace)
        span.set_attribute("edge.joined", True)
    if isinstance(result, Reply):
        span.set_attribute("messaging.message.id", result.job_id)
        span.set_attribute("edge.reply.status", result.status)
        if result.status >= 400:
            t.failed(span, str(result.status))
    elif isinstance(getattr(result, "job", None), Job):  # a stream under way
        span.set_attribute("messaging.message.id", result.job.job_id)  # type: ignore[attr-defined]
        span.set_attribute("edge.reply.status", 200)
    else:  # the miss script found the answer in L2: nothing was enqueued
        span.set_attribute("edge.cache", "hit-l2")
    span.end()
    return outcome


def job_context() -> dict[str, str]:
    """What a job carries of its attempt's trace (`Job.trace`): the current PRODUCER span's W3C
    context, and the attempt's number for the worker's spans."""
    carrier = t.carrier_of()
    attempt = getattr(t.current(), "attributes", None) or {}
    if "edge.attempt" in attempt:
        carrier["attempt"] = str(attempt["edge.attempt"])
    return carrier
