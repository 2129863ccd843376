"""An embeddings job's upstream call: the provider's adapter (`providers.embeddings`) makes one
or more HTTP requests of the client's; they run concurrently (at most PARALLEL_CALLS at once)
through the same `send` as chat, and their answers become one OpenAI embeddings answer. The
first failure is the job's answer, as a chat failure would be (same status mapping, retries and
breaker outcome)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from edge_workers.providers.base import UpstreamRequest
from edge_workers.providers.embeddings import EMBEDDERS, EmbeddingsCall
from edge_workers.upstream import (
    Answered,
    Outcome,
    error_outcome,
    no_adapter,
    retry_after_of,
    send,
    time_left,
)
from shared.config import Deployment
from shared.errors import EdgeError
from shared.wire import Usage

# One request can fan out (Bedrock Titan takes one text per call): this bounds its calls in flight.
PARALLEL_CALLS = 16


async def call_embeddings(
    session: aiohttp.ClientSession,
    deployment: Deployment,
    api_key: str,
    upstream_model: str,
    body: dict[str, Any],
    deadline: float,
    max_body_bytes: int,
) -> Outcome:
    embedder = EMBEDDERS.get(deployment.provider)
    if embedder is None:
        return no_adapter(deployment, "embeddings")
    try:
        call = EmbeddingsCall(body, upstream_model)
        requests = embedder.build_requests(call, deployment, api_key)
    except EdgeError as e:
        return Outcome(e.status, e.body())
    remaining = time_left(deployment, deadline)
    if isinstance(remaining, Outcome):
        return remaining
    gate = asyncio.Semaphore(PARALLEL_CALLS)

    async def one(request: UpstreamRequest) -> Answered | Outcome:
        async with gate:
            return await send(session, deployment, request, remaining, deadline, max_body_bytes)

    if len(requests) == 1:
        answers = [await send(session, deployment, requests[0], remaining, deadline, max_body_bytes)]
    else:
        answers = list(await asyncio.gather(*(one(r) for r in requests)))
    for answer in answers:
        if isinstance(answer, Outcome):
            return answer
        if not 200 <= answer.status < 300:
            failed = error_outcome(
                deployment, answer.status, answer.body, retry_after_of(answer.headers), embedder
            )
            failed.attempted = True
            return failed
    done = [a for a in answers if isinstance(a, Answered)]
    try:
        encoded, tokens = embedder.parse_answers(call, [(a.body, a.headers) for a in done])
    except EdgeError as e:
        return Outcome(e.status, e.body(), attempted=True)
    latency_ms = max(a.latency_ms for a in done)
    return Outcome(200, encoded, Usage(tokens, 0, tokens), attempted=True, latency_ms=latency_ms)
