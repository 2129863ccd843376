"""The upstream HTTP call: one pooled aiohttp session per worker process.

aiohttp, not httpx, because it costs ~20x less CPU per request under concurrency (measured in
../shared/NOTES.md), and this call is the worker's hot path. The outcome of a call is always an
`Outcome`: a chat.completion to return, or an error already in the gateway's terms.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec

from edge_workers.providers import ADAPTERS, UpstreamRequest
from shared.config import Deployment
from shared.errors import EdgeError, error_body
from shared.wire import Usage


class Outcome(msgspec.Struct):
    status: int
    body: bytes
    usage: Usage | None = None
    retry_after: float | None = None
    attempted: bool = False  # the upstream was called: this outcome says something about it
    latency_ms: float = -1.0


def new_session(connect_timeout_s: float, max_connections: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=max_connections, keepalive_timeout=60, ttl_dns_cache=300)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(sock_connect=connect_timeout_s),
        skip_auto_headers=("User-Agent",),
        auto_decompress=True,
    )


def retry_after_of(headers: Any) -> float | None:
    ms = headers.get("retry-after-ms")
    value = float(ms) / 1000 if ms and ms.replace(".", "", 1).isdigit() else None
    if value is None:
        seconds = headers.get("retry-after")
        if seconds and seconds.replace(".", "", 1).isdigit():
            value = float(seconds)
    return value


def call_timeout(session: aiohttp.ClientSession, remaining_s: float) -> aiohttp.ClientTimeout:
    """The whole call must end by the request's deadline; connecting keeps its own limit."""
    connect = session.timeout.sock_connect
    return aiohttp.ClientTimeout(total=remaining_s, sock_connect=min(remaining_s, connect or remaining_s))


def gateway_status(upstream_status: int) -> int:
    """Upstream 4xx keeps its status (the client's request is at fault); 5xx becomes 502."""
    return upstream_status if 400 <= upstream_status < 500 else 502


def prepare_call(
    deployment: Deployment,
    api_key: str,
    upstream_model: str,
    body: dict[str, Any],
    deadline: float,
    stream: bool,
) -> tuple[UpstreamRequest, float] | Outcome:
    """The upstream request and the seconds left for it, or why no call will be made."""
    try:
        request = ADAPTERS[deployment.provider].build_request(
            body, upstream_model, deployment, api_key, stream
        )
    except EdgeError as e:
        return Outcome(e.status, e.body())
    remaining = deadline - time.time()
    if remaining <= 0:
        return Outcome(504, error_body(504, "request deadline passed before the upstream call"))
    return request, remaining


async def call_upstream(
    session: aiohttp.ClientSession,
    deployment: Deployment,
    api_key: str,
    upstream_model: str,
    body: dict[str, Any],
    deadline: float,
) -> Outcome:
    adapter = ADAPTERS[deployment.provider]
    prepared = prepare_call(deployment, api_key, upstream_model, body, deadline, stream=False)
    if isinstance(prepared, Outcome):
        return prepared
    request, remaining = prepared
    started = time.perf_counter()
    try:
        async with session.post(
            request.url,
            data=request.body,
            headers=request.headers,
            timeout=call_timeout(session, remaining),
        ) as response:
            raw = await response.read()
            status = response.status
            retry_after = retry_after_of(response.headers)
    except TimeoutError:
        message = f"upstream {deployment.provider} did not answer in time"
        return Outcome(504, error_body(504, message), attempted=True)
    except aiohttp.ClientError as e:
        message = f"upstream {deployment.provider} connection failed: {type(e).__name__}"
        return Outcome(502, error_body(502, message), attempted=True)
    latency_ms = (time.perf_counter() - started) * 1000
    if 200 <= status < 300:
        try:
            completion, usage = adapter.parse_response(raw)
        except EdgeError as e:
            return Outcome(e.status, e.body(), attempted=True)
        return Outcome(200, completion, usage, attempted=True, latency_ms=latency_ms)
    failed = error_outcome(deployment, status, raw, retry_after)
    failed.attempted = True
    return failed


def error_outcome(deployment: Deployment, status: int, raw: bytes, retry_after: float | None) -> Outcome:
    """A non-2xx upstream answer in the gateway's terms."""
    detail = ADAPTERS[deployment.provider].parse_error(status, raw)
    gw_status = gateway_status(status)
    message = (
        detail.message
        if gw_status == status
        else f"upstream {deployment.provider} error {status}: {detail.message}"
    )
    return Outcome(
        gw_status,
        error_body(gw_status, message, detail.type, detail.param, detail.code),
        retry_after=retry_after,
    )
