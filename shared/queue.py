"""The queue protocol between the front and the provider workers.

A cache miss becomes one arq job on its provider's queue. The job's only argument is a msgpack
`Job` (never pickle). Answers come back as msgpack `Reply` entries on the asking front
process's reply stream.

The front enqueues with one script (shared/miss_script.py) that writes exactly the keys arq's
`ArqRedis.enqueue_job` writes (job key with expiry, queue sorted-set entry), so stock arq workers
and tools understand them, and appends the job id to the provider's wake stream: workers block
on that stream instead of sleeping in arq's poll loop (which would add ~500 ms to every miss).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from redis.asyncio import Redis

from shared import keyspace
from shared.arq_compat import JOB_KEY_PREFIX
from shared.commands import CommandSink

JOB_FUNCTION = "chat_completion"
WAKE_STREAM_MAXLEN = 10_000
# A job this small also rides in its wake entry (see shared/miss_script.py). Claims delete the
# entries they read, so the stream holds only unclaimed jobs: at worst (no worker reading) its
# maxlen of them, 40 MB.
WAKE_DATA_MAX_BYTES = 4096
REPLY_STREAM_MAXLEN = 100_000
# Extra life for a job key past its deadline, so a late worker sees "expired", not garbage.
JOB_KEY_GRACE_MS = 5_000
# Workers heartbeat this often; one silent for DEAD_AFTER_S is dead and its jobs are re-queued.
WORKER_HEARTBEAT_S = 0.5
WORKER_DEAD_AFTER_S = 2.0
# An idle worker renews its ticket (edge_workers/handoff.py) at least this often, and a miss hands
# its job only to a ticket renewed within TICKET_FRESH_MS: a worker killed while idle can take
# one job with it, which the reaper gives back within WORKER_DEAD_AFTER_S.
TICKET_RENEW_S = 1.0
TICKET_FRESH_MS = int(WORKER_DEAD_AFTER_S * 1000)
# A deployment's per-minute usage hash outlives its minute just long enough to be read.
USAGE_TTL_S = 120


class KeyCharge(msgspec.Struct, frozen=True):
    """Where a virtual key's usage of this job is booked when the worker publishes its answer
    (shared/admission.py reserved it; edge_workers/publishing.py settles it)."""

    period: str = "life"  # the key's budget period (shared.keys.budget_period)
    period_ends: float = 0.0  # unix time the period ends; 0: never
    tpm_window_s: int = 0  # count the tokens in the key's tpm window of this length; 0: no tpm limit


class Job(msgspec.Struct, frozen=True):
    job_id: str  # unique across the cluster; the front's answer waits under this id
    request_id: str  # the client-visible x-request-id, for logs
    reply_to: str  # the reply stream of the front process that waits for the answer
    provider: str
    deployment_id: str  # resolved by the worker in its own config; never a URL
    upstream_model: str
    body: bytes  # the client's JSON request as received (already validated by the front)
    deadline: float  # unix time; a worker drops the job instead of calling upstream after it
    cache_key: str | None = None  # None: do not write the answer to L2 (Cache-Control: no-store)
    cache_ttl_s: int = 3600
    stream: bool = False
    client_deadline: bool = False  # the deadline is the client's own, shorter than the gateway's
    key_id: str | None = None  # the asking virtual key's public id (never the key); None: master
    # The key's in-flight slot this job holds (shared/admission.py), and with it what the request
    # reserved of the key's tpm and budget: released when the job ends. None: the key has no
    # parallel, tpm or budget limit.
    slot: str | None = None
    charge: KeyCharge | None = None  # set for every virtual key's job
    # The job leads a flight (shared/flights.py): identical misses wait for its replies too.
    flight: bool = False
    # The API shape the client asked in and must be answered in: "chat" (chat.completion),
    # "messages" (an Anthropic message), "count_tokens" (Anthropic's {"input_tokens": N}),
    # "embeddings" (OpenAI's embeddings list, from the provider's embeddings API).
    api: str = "chat"
    # Headers of the client's to pass to the upstream: only anthropic-version and anthropic-beta,
    # for a Messages request to an Anthropic upstream (shared/anthropic_api.FORWARDED_HEADERS).
    upstream_headers: dict[str, str] | None = None
    skip_lookup: bool = False  # Cache-Control: no-cache: the worker's semantic cache is skipped too
    # The W3C trace context (`traceparent`, `tracestate`) of the attempt's PRODUCER span when
    # tracing is on: the worker's spans continue the request's trace. Optional, so fronts and
    # workers of either version read each other's jobs (msgspec ignores unknown fields).
    trace: dict[str, str] | None = None
    # The front did not see the deployment's breaker closed (the job may be a half-open breaker's
    # probe): the worker records its outcome with the answer, never in a later batch.
    record_now: bool = False


class Reply(msgspec.Struct, frozen=True):
    """One message to a waiting front. A non-streamed answer is one `final` reply. A streamed
    one is `chunk` replies followed by `done` (body: the assembled chat.completion) or `error`
    (body: an error envelope); a stream that fails before its first chunk sends `final`."""

    job_id: str
    kind: Literal["final", "chunk", "done", "error"] = "final"
    status: int = 200
    body: bytes = b""  # the answer or chunk in the job's API shape, or an (OpenAI) error envelope
    usage_chunk: bool = False  # the chunk carrying only usage (for stream_options.include_usage)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_after: float | None = None
    cost_usd: float = 0.0  # what the answer cost upstream (on `final` 200 and `done` replies)
    cache: str = "miss"  # x-edge-cache of the answer: "hit-semantic" when a worker's cache served it


_job_encoder = msgspec.msgpack.Encoder()
_job_decoder = msgspec.msgpack.Decoder(Job)
_reply_decoder = msgspec.msgpack.Decoder(Reply)
_arq_decoder = msgspec.msgpack.Decoder()


def arq_serialize(data: dict[str, Any]) -> bytes:
    """arq's job_serializer: msgpack instead of its default pickle."""
    return _job_encoder.encode(data)


def arq_deserialize(data: bytes) -> dict[str, Any]:
    result: dict[str, Any] = _arq_decoder.decode(data)
    return result


def encode_job(job: Job) -> bytes:
    return _job_encoder.encode(job)


def decode_job(data: bytes) -> Job:
    return _job_decoder.decode(data)


def encode_reply(reply: Reply) -> bytes:
    return _job_encoder.encode(reply)


def decode_reply(data: bytes) -> Reply:
    return _reply_decoder.decode(data)


async def cancel(
    redis: Redis, provider: str, job_ids: list[str], slots: list[tuple[str, str]] | None = None
) -> None:
    """Nobody waits for these jobs any more: stop any a worker runs, drop those still queued, and
    free the virtual keys' slots (and their reservations) they held (`slots`: (key id, slot id)
    pairs)."""
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.publish(keyspace.cancels(provider), job_id)
        pipe.zrem(keyspace.queue(provider), *job_ids)
        pipe.delete(*(JOB_KEY_PREFIX + job_id for job_id in job_ids))
        for key_id, slot in slots or ():
            release_slot(pipe, key_id, slot)
        await pipe.execute()


def release_slot(pipe: CommandSink, key_id: str, slot: str) -> None:
    """Queue on `pipe` the release of a key's in-flight slot, and with it what it reserved."""
    pipe.zrem(keyspace.key_parallel(key_id), slot)


def slot_of(job: Job) -> list[tuple[str, str]]:
    """The (key id, slot id) `job` holds, for `cancel`; empty when it holds none."""
    return [(job.key_id, job.slot)] if job.key_id is not None and job.slot is not None else []
