"""The upstream HTTP call: one pooled aiohttp session per worker process.

aiohttp, not httpx, because it costs ~20x less CPU per request under concurrency (measured in
../shared/NOTES.md), and this call is the worker's hot path. The outcome of a call is always an
`Outcome`: a chat.completion to return, or an error already in the gateway's terms.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
import msgspec

from edge_workers.estimate import estimate_usage
from edge_workers.providers import ADAPTERS, Adapter, UpstreamRequest
from edge_workers.providers.base import ErrorReader, upstream_status
from shared.config import Deployment
from shared.errors import EdgeError, deadline_body, error_body
from shared.wire import ChatCompletion, Usage

log = logging.getLogger("edge.worker")
_decode_completion = msgspec.json.Decoder(ChatCompletion).decode


class Outcome(msgspec.Struct):
    status: int
    body: bytes
    usage: Usage | None = None
    retry_after: float | None = None
    attempted: bool = False  # the upstream was called: this outcome says something about it
    latency_ms: float = -1.0
    deadline: bool = False  # the request's deadline ended the call (the upstream may be fine)


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


# The upstream refused the gateway's own credentials: not the client's fault, so never the
# client's 401/403 (the SDK would blame the client's key), and the deployment's failure.
CREDENTIALS_REFUSED = frozenset({401, 403})


# 424 Failed Dependency: the provider's model itself failed (Bedrock's ModelErrorException).
UPSTREAM_FAULTS = CREDENTIALS_REFUSED | {424}


def gateway_status(upstream_status: int) -> int:
    """Upstream 4xx keeps its status (the client's request is at fault), but for a refusal of the
    gateway's credentials or a failure of the model; those and 5xx become 502."""
    if 400 <= upstream_status < 500 and upstream_status not in UPSTREAM_FAULTS:
        return upstream_status
    return 502


class BodyTooLarge(Exception):
    """The upstream's answer is longer than the configured limit."""


async def read_body(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The whole body, refusing one longer than `limit` without reading it all."""
    declared = response.content_length
    if declared is not None:
        if declared > limit:
            raise BodyTooLarge
        return await response.read()  # bounded: the parser stops at Content-Length
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def timed_out(deployment: Deployment, deadline: float) -> Outcome:
    """A call that ran out of time: at the request's deadline, or at the deployment's own timeout
    (then the deployment's failure, and another deployment may still answer in time)."""
    if time.time() >= deadline - 0.05:
        return Outcome(504, deadline_body(), attempted=True, deadline=True)
    message = f"upstream {deployment.provider} did not answer within deployment '{deployment.id}''s timeout"
    return Outcome(504, error_body(504, message), attempted=True)


def too_large(deployment: Deployment, limit: int) -> Outcome:
    message = f"upstream {deployment.provider} sent an answer larger than the gateway's {limit}-byte limit"
    return Outcome(502, error_body(502, message), attempted=True)


def prepare_call(
    deployment: Deployment,
    api_key: str,
    upstream_model: str,
    body: dict[str, Any],
    deadline: float,
    stream: bool,
    adapter: Adapter | None = None,
    built: UpstreamRequest | None = None,
) -> tuple[UpstreamRequest, float] | Outcome:
    """The upstream request and the seconds left for it, or why no call will be made. `built`:
    the request already built from the same arguments (edge_workers/ahead.py)."""
    adapter = adapter or ADAPTERS.get(deployment.provider)
    if adapter is None:
        return no_adapter(deployment, "chat completions")
    if built is not None:
        request = built
    else:
        try:
            request = adapter.build_request(body, upstream_model, deployment, api_key, stream)
        except EdgeError as e:
            return Outcome(e.status, e.body())
    remaining = time_left(deployment, deadline, stream)
    return remaining if isinstance(remaining, Outcome) else (request, remaining)


def no_adapter(deployment: Deployment, what: str) -> Outcome:
    message = f"model '{deployment.model_name}' (provider {deployment.provider}) does not serve {what}"
    return Outcome(400, error_body(400, message, param="model", code="unsupported_endpoint"))


def time_left(deployment: Deployment, deadline: float, stream: bool = False) -> float | Outcome:
    """The seconds one upstream call may take, or the deadline's 504 when none are left."""
    remaining = deadline - time.time()
    if remaining <= 0:
        return Outcome(504, deadline_body(), deadline=True)
    # The deployment's own timeout (LiteLLM's timeout / stream_timeout) bounds one call; the
    # request's deadline still bounds them all.
    limit = (deployment.stream_timeout_s if stream else None) or deployment.timeout_s
    return min(remaining, limit) if limit else remaining


class Answered(msgspec.Struct):
    """An upstream's HTTP answer, whatever its status."""

    status: int
    body: bytes
    headers: Any  # aiohttp's CIMultiDictProxy
    latency_ms: float


async def send(
    session: aiohttp.ClientSession,
    deployment: Deployment,
    request: UpstreamRequest,
    remaining: float,
    deadline: float,
    max_body_bytes: int,
) -> Answered | Outcome:
    """POST `request`; its answer, or an Outcome for a call that got none (timeout, connection
    failure, a body over the limit)."""
    started = time.perf_counter()
    try:
        async with session.post(
            request.target,
            data=request.body,
            headers=request.headers,
            timeout=call_timeout(session, remaining),
        ) as response:
            raw = await read_body(response, max_body_bytes)
            status = response.status
            headers = response.headers
    except BodyTooLarge:
        return too_large(deployment, max_body_bytes)
    except aiohttp.ConnectionTimeoutError:  # the upstream's own failure, whatever the deadline
        message = f"upstream {deployment.provider} did not accept a connection in time"
        return Outcome(504, error_body(504, message), attempted=True)
    except TimeoutError:
        return timed_out(deployment, deadline)
    except aiohttp.ClientError as e:
        message = f"upstream {deployment.provider} connection failed: {type(e).__name__}"
        return Outcome(502, error_body(502, message), attempted=True)
    return Answered(status, raw, headers, (time.perf_counter() - started) * 1000)


async def call_upstream(
    session: aiohttp.ClientSession,
    deployment: Deployment,
    api_key: str,
    upstream_model: str,
    body: dict[str, Any],
    deadline: float,
    max_body_bytes: int,
    adapter: Adapter | None = None,
    built: UpstreamRequest | None = None,
) -> Outcome:
    """One non-streamed call. `adapter` is the request's shape (default: the provider's, chat);
    `built` its request, if built already."""
    prepared = prepare_call(deployment, api_key, upstream_model, body, deadline, False, adapter, built)
    if isinstance(prepared, Outcome):
        return prepared
    request, remaining = prepared
    adapter = adapter or ADAPTERS[deployment.provider]  # prepare_call found one
    answered = await send(session, deployment, request, remaining, deadline, max_body_bytes)
    if isinstance(answered, Outcome):
        return answered
    if 200 <= answered.status < 300:
        try:
            completion, usage = adapter.parse_response(answered.body, upstream_model)
        except EdgeError as e:
            return Outcome(e.status, e.body(), attempted=True)
        if usage is None:  # a compatible server that counts nothing: estimated for limits and costs
            usage = _estimated(body, completion, deployment)
        return Outcome(200, completion, usage, attempted=True, latency_ms=answered.latency_ms)
    retry_after = retry_after_of(answered.headers)
    failed = error_outcome(deployment, answered.status, answered.body, retry_after, adapter)
    failed.attempted = True
    return failed


def _estimated(body: dict[str, Any], completion: bytes, deployment: Deployment) -> Usage | None:
    try:  # a chat completion (an answer in another API's shape always carries usage)
        decoded = _decode_completion(completion)
    except msgspec.DecodeError:
        return None
    return estimate_usage(body, decoded, deployment.id)


def error_outcome(
    deployment: Deployment,
    status: int,
    raw: bytes,
    retry_after: float | None,
    adapter: ErrorReader | None = None,
) -> Outcome:
    """A non-2xx upstream answer in the gateway's terms (`adapter`: whose error shape to read;
    by default the provider's chat adapter's)."""
    # What a status means is the provider's, whatever the API (Bedrock has no chat adapter yet).
    provider = ADAPTERS.get(deployment.provider)
    if provider is not None:
        status, retry_after = upstream_status(provider, status, raw, retry_after)
    reader = adapter or provider
    assert reader is not None, "an error of a provider without an adapter names its reader"
    gw_status = gateway_status(status)
    if status in CREDENTIALS_REFUSED:
        # The upstream's message may quote the (masked) provider key: it stays in no answer.
        log.warning(
            "deployment %s: upstream %s refused the gateway's credentials (%d)",
            deployment.id,
            deployment.provider,
            status,
            extra={"deployment": deployment.id, "provider": deployment.provider, "status": status},
        )
        message = (
            f"upstream {deployment.provider} refused the gateway's credentials for deployment "
            f"'{deployment.id}' (HTTP {status}); the gateway's operator must fix its API key"
        )
        return Outcome(
            gw_status,
            error_body(gw_status, message, code="upstream_credentials_refused"),
            retry_after=retry_after,
        )
    detail = reader.parse_error(status, raw)
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
