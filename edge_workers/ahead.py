"""A job's upstream request, built while the worker's claim of it is on its way to Redis.

A woken worker claims a job in one round trip (edge_workers/worker.py) and only then builds its
upstream request: for Bedrock (the Converse mapping and botocore's SigV4 signature) that is
~120 µs of CPU at c=1, spent after a round trip in which the worker sat idle. A small job's data
rides in its wake entry (shared/miss_script.py), so an idle worker woken by one entry sends its
claim, builds the request meanwhile, and the job's run uses what was built (`take`). Built only
by an idle worker woken by a single entry (a busy one has other jobs' work to overlap with its
claims) and dropped if the claim went to another worker; a request whose building fails is
built again, and fails, in the job's own run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from edge_workers import metrics
from edge_workers.messages import shape_of
from edge_workers.providers import Adapter, UpstreamRequest
from edge_workers.upstream import Outcome, prepare_call
from shared import arq_compat
from shared.config import Deployment
from shared.embeddings_wire import EMBEDDINGS_API
from shared.queue import Job, arq_deserialize, decode_job

if TYPE_CHECKING:
    from edge_workers.jobs import WorkerState
    from edge_workers.streaming import AnswerStream

_decode_json = msgspec.json.decode


@dataclass
class Ahead:
    """What the job's run needs of its upstream call, built ahead."""

    body: dict[str, Any]
    adapter: Adapter
    answer_stream: AnswerStream | None
    request: UpstreamRequest


def api_key(state: WorkerState, deployment: Deployment) -> str:
    """The deployment's key: its own (a config file's) wins over its variable's."""
    return deployment.api_key or state.api_keys.get(deployment.api_key_env, "")


def build(state: WorkerState, job_id: str, data: bytes) -> None:
    """Build the upstream request of the job whose arq data is `data`, for `take`; nothing when
    the job is not a plain upstream call (embeddings, a semantic-cache group's, a bad job)."""
    try:
        _, args, _ = arq_compat.deserialize_job_data(data, arq_deserialize)
        job = decode_job(args[0])
        deployment = state.models.by_id(job.deployment_id)
        if (
            job.job_id != job_id
            or deployment is None
            or deployment.provider != state.provider
            or job.api == EMBEDDINGS_API
            or state.semantic is not None  # the job may be a semantic hit: no call at all
            or job.deadline <= time.time()
        ):
            return
        adapter, answer_stream = shape_of(job, deployment)
        body = _decode_json(job.body)
        prepared = prepare_call(
            deployment,
            api_key(state, deployment),
            job.upstream_model,
            body,
            job.deadline,
            job.stream,
            adapter,
        )
    except Exception:  # its own run meets the same problem and answers it
        return
    if not isinstance(prepared, Outcome):
        state.built_ahead[job_id] = Ahead(body, adapter, answer_stream, prepared[0])


def take(state: WorkerState, job: Job) -> Ahead | None:
    """The job's request built ahead, if it was (counted: the metric says how often it helps)."""
    built = state.built_ahead.pop(job.job_id, None)
    if built is not None:
        metrics.of(state.provider).built_ahead.inc()
    return built


def drop(state: WorkerState, job_ids: list[str]) -> None:
    for job_id in job_ids:
        state.built_ahead.pop(job_id, None)
