"""edge_workers.ahead: a job's upstream request built from its wake entry while the claim travels
is exactly the one its run would build, is used once, and only for plain upstream calls."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from edge_workers import ahead
from edge_workers.providers import ADAPTERS
from shared.arq_compat import serialize_job_data
from shared.config import ModelTable, read_config
from shared.embeddings_wire import EMBEDDINGS_API
from shared.queue import JOB_FUNCTION, Job, arq_serialize, encode_job

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


def models(tmp_path: Path) -> ModelTable:
    config = tmp_path / "models.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    provider: openai\n    api_key_env: OPENAI_API_KEY\n"
    )
    loaded = read_config(str(config), {})
    return ModelTable(loaded.deployments, {}, by_prefix=False, router=loaded.router)


def state(tmp_path: Path, **fields: Any) -> Any:
    values: dict[str, Any] = {
        "provider": "openai",
        "models": models(tmp_path),
        "api_keys": {"OPENAI_API_KEY": "sk-up"},
        "semantic": None,
        "built_ahead": {},
    }
    return SimpleNamespace(**{**values, **fields})


def job_data(deployment_id: str, **fields: Any) -> tuple[Job, bytes]:
    values: dict[str, Any] = {
        "job_id": "j1",
        "request_id": "req_1",
        "reply_to": "r",
        "provider": "openai",
        "deployment_id": deployment_id,
        "upstream_model": "gpt-4o-mini",
        "body": msgspec.json.encode(BODY),
        "deadline": time.time() + 60,
    }
    job = Job(**{**values, **fields})
    return job, serialize_job_data(JOB_FUNCTION, (encode_job(job),), int(time.time() * 1000), arq_serialize)


def test_the_request_built_ahead_is_the_runs_own_and_taken_once(tmp_path: Path) -> None:
    worker = state(tmp_path)
    deployment = worker.models.deployments()[0]
    job, data = job_data(deployment.id)
    ahead.build(worker, "j1", data)
    built = worker.built_ahead["j1"]
    expected = ADAPTERS["openai"].build_request(BODY, "gpt-4o-mini", deployment, "sk-up", False)
    assert built.request == expected and built.body == BODY
    assert built.request.headers["Authorization"] == "Bearer sk-up"
    assert ahead.take(worker, job) is built
    assert ahead.take(worker, job) is None and worker.built_ahead == {}


def test_only_plain_upstream_calls_are_built_ahead(tmp_path: Path) -> None:
    worker = state(tmp_path)
    deployment_id = worker.models.deployments()[0].id
    cases = {
        "embeddings": job_data(deployment_id, api=EMBEDDINGS_API)[1],
        "expired": job_data(deployment_id, deadline=time.time() - 1)[1],
        "unknown deployment": job_data("nowhere#0")[1],
        "not a job": b"\x00garbage",
    }
    for why, data in cases.items():
        ahead.build(worker, "j1", data)
        assert worker.built_ahead == {}, why
    ahead.build(worker, "another-id", job_data(deployment_id)[1])  # the entry names another job
    assert worker.built_ahead == {}
    for other in (
        state(tmp_path, semantic=object()),  # the job may be a semantic hit: no call at all
        state(tmp_path, provider="anthropic"),  # another provider's deployment
    ):
        ahead.build(other, "j1", job_data(deployment_id)[1])
        assert other.built_ahead == {}


def test_dropped_when_another_worker_claims_it(tmp_path: Path) -> None:
    worker = state(tmp_path)
    ahead.build(worker, "j1", job_data(worker.models.deployments()[0].id)[1])
    assert "j1" in worker.built_ahead
    ahead.drop(worker, ["j1"])
    assert worker.built_ahead == {}
