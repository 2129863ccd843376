"""A worker's spans (only when `shared.tracing.ON`; the hot modules check it before calling).

Per job: a CONSUMER span continuing the attempt's PRODUCER span (its W3C context travels in
`Job.trace`), and inside it a CLIENT span for the upstream call with OpenTelemetry's GenAI
semantic-convention attributes. Prompts and answers are recorded only with
`EDGE_TRACE_CONTENT=true`; keys never.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from typing import Any

import msgspec

from edge_workers.publishing import Publication
from shared import keyspace
from shared import tracing as t
from shared.config import Deployment
from shared.queue import Job

# gen_ai.provider.name's well-known values, by the gateway's provider names.
PROVIDER_NAMES = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "gcp.gemini",
    "azure": "azure.ai.openai",
    "bedrock": "aws.bedrock",
}


class _Choice(msgspec.Struct):
    finish_reason: str | None = None
    message: msgspec.Raw = msgspec.Raw()  # empty: none


class _Completion(msgspec.Struct):
    """What a span says of an answer: a chat.completion (whichever provider it came from), or an
    Anthropic message (a /v1/messages job: `stop_reason`, its `content` the output)."""

    id: str | None = None
    model: str | None = None
    choices: list[_Choice] = []
    stop_reason: str | None = None
    content: msgspec.Raw = msgspec.Raw()


class _Prompt(msgspec.Struct):
    messages: msgspec.Raw = msgspec.Raw()


_decode_completion = msgspec.json.Decoder(_Completion).decode
_decode_prompt = msgspec.json.Decoder(_Prompt).decode


async def consume(ctx: dict[str, Any], job: Job, run: Awaitable[None]) -> None:
    """The job's CONSUMER span, current while `run` (the job) runs: its log lines carry the
    trace id and the upstream call's span is its child."""
    carrier = job.trace or {}
    queue = keyspace.queue(job.provider)
    attributes: dict[str, Any] = {
        "messaging.system": "arq",
        "messaging.operation.type": "process",
        "messaging.destination.name": queue,
        "messaging.message.id": job.job_id,
        "edge.request_id": job.request_id,
        "edge.deployment": job.deployment_id,
        "edge.job_try": ctx.get("job_try", 1),
    }
    if "attempt" in carrier and carrier["attempt"].isdigit():
        attributes["edge.attempt"] = int(carrier["attempt"])
    if job.key_id is not None:
        attributes["edge.key_id"] = job.key_id
    enqueued = ctx.get("enqueue_time")
    if enqueued is not None:
        attributes["edge.queue_wait_ms"] = max(0.0, (time.time() - enqueued.timestamp()) * 1000)
    span = t.start(f"process {queue}", t.CONSUMER, attributes, t.extract(carrier) if carrier else None)
    await t.inside(span, run)


def _client_span(job: Job, deployment: Deployment) -> Any:
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(deployment.provider, deployment.provider),
        "gen_ai.request.model": job.upstream_model,
        "edge.deployment": deployment.id,
        "edge.stream": job.stream,
    }
    if t.CONTENT:  # EDGE_TRACE_CONTENT=true: the operator asked for the prompt
        try:
            messages = _decode_prompt(job.body).messages
        except msgspec.DecodeError:
            messages = msgspec.Raw()
        if messages:
            attributes["gen_ai.input.messages"] = bytes(messages).decode()
    return t.start(f"chat {job.upstream_model}", t.CLIENT, attributes)


def _answered(span: Any, status: int, body: bytes, input_tokens: int, output_tokens: int) -> None:
    """The answer's attributes (a whole chat.completion), or its failure."""
    if status >= 400:
        t.failed(span, str(status))
        return
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }
    try:
        completion = _decode_completion(body)
    except msgspec.DecodeError:
        completion = _Completion()
    if completion.model:
        attributes["gen_ai.response.model"] = completion.model
    if completion.id:
        attributes["gen_ai.response.id"] = completion.id
    reasons = [c.finish_reason for c in completion.choices if c.finish_reason]
    if completion.stop_reason:
        reasons.append(completion.stop_reason)
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    if t.CONTENT:
        output = [bytes(c.message).decode() for c in completion.choices if c.message]
        if completion.content:
            output.append(bytes(completion.content).decode())
        attributes["gen_ai.output.messages"] = "[" + ",".join(output) + "]"
    span.set_attributes(attributes)


async def chat_call(job: Job, deployment: Deployment, call: Awaitable[Any]) -> Any:
    """The CLIENT span of a non-streamed upstream call (`call` gives an `upstream.Outcome`)."""
    span = _client_span(job, deployment)
    try:
        outcome = await call
    except BaseException as e:
        t.failed(span, type(e).__qualname__)
        span.end()
        raise
    usage = outcome.usage
    _answered(
        span,
        outcome.status,
        outcome.body,
        usage.prompt_tokens if usage else 0,
        usage.completion_tokens if usage else 0,
    )
    span.end()
    return outcome


async def stream_call(job: Job, deployment: Deployment, call: Awaitable[str]) -> str:
    """The CLIENT span of a streamed call, current while it runs: `published` sees its chunks."""
    return await t.inside(_client_span(job, deployment), call)


def published(pub: Publication) -> None:
    """A stream's publication, seen from its CLIENT span: the first chunk's delay (time to first
    token), and the end (the assembled completion, or the error)."""
    span = t.current()
    started_ns = getattr(span, "start_time", None)  # None: not recorded (sampled out)
    if pub.first_chunks and started_ns:
        seconds = (time.time_ns() - started_ns) / 1e9
        span.set_attribute("gen_ai.response.time_to_first_chunk", seconds)
        span.add_event("gen_ai.first_chunk", {"gen_ai.response.time_to_first_chunk": seconds})
    last = pub.replies[-1] if pub.replies else None
    if last is not None and last.kind != "chunk":
        _answered(span, last.status, last.body, last.prompt_tokens, last.completion_tokens)
