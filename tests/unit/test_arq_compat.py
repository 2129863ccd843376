"""The arq internals the gateway uses, pinned: an arq upgrade that moves one fails here, loudly,
and a worker built on such an arq refuses to start instead of silently stalling."""

from __future__ import annotations

import inspect

import pytest
from arq import constants
from arq.jobs import serialize_job
from arq.worker import Worker

from edge_workers.worker import build_worker
from shared import arq_compat, keyspace
from shared.config import load_settings
from shared.queue import arq_deserialize, arq_serialize


def test_the_installed_arq_has_everything_the_gateway_uses() -> None:
    arq_compat.check_arq()


@pytest.mark.parametrize("name", sorted(arq_compat.WORKER_METHODS))
def test_each_private_worker_method_is_pinned_by_name_and_signature(name: str) -> None:
    method = getattr(Worker, name)
    assert tuple(inspect.signature(method).parameters) == arq_compat.WORKER_METHODS[name]


@pytest.mark.parametrize("missing", ["_release_sem_dec_counter_on_complete", "_poll_iteration", "start_jobs"])
def test_a_worker_class_without_a_private_method_is_refused_with_its_name(missing: str) -> None:
    class Renamed(Worker):
        pass

    setattr(Renamed, missing, None)  # as if arq had renamed it
    with pytest.raises(arq_compat.ArqIncompatible, match=missing):
        arq_compat.check_arq(Renamed)


def test_a_changed_signature_is_refused() -> None:
    class Changed(Worker):
        async def start_jobs(self, job_ids: list[bytes], extra: int = 0) -> None:  # type: ignore[override]
            return None

    with pytest.raises(arq_compat.ArqIncompatible, match="start_jobs"):
        arq_compat.check_arq(Changed)


def test_a_missing_attribute_is_refused() -> None:
    class NoCounter(Worker):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            del self.job_counter

    with pytest.raises(arq_compat.ArqIncompatible, match="job_counter"):
        arq_compat.check_arq(NoCounter)


def test_build_worker_refuses_to_start_on_an_incompatible_arq(monkeypatch: pytest.MonkeyPatch) -> None:
    def incompatible(worker_class: type[Worker] = Worker) -> None:
        raise arq_compat.ArqIncompatible("Worker._poll_iteration() is missing")

    monkeypatch.setattr(arq_compat, "check_arq", incompatible)
    settings, models = load_settings({"EDGE_MASTER_KEY": "k"})
    with pytest.raises(arq_compat.ArqIncompatible):
        build_worker("openai", settings, models)


def test_key_names_come_from_arq_s_own_constants() -> None:
    assert arq_compat.JOB_KEY_PREFIX == constants.job_key_prefix
    assert arq_compat.IN_PROGRESS_KEY_PREFIX == constants.in_progress_key_prefix
    assert keyspace.queue_health("openai") == keyspace.queue("openai") + constants.health_check_key_suffix


def test_a_job_key_value_is_exactly_what_arq_itself_writes() -> None:
    ours = arq_compat.serialize_job_data("chat_completion", (b"payload",), 1234, arq_serialize)
    theirs = serialize_job("chat_completion", (b"payload",), {}, None, 1234, serializer=arq_serialize)
    assert ours == theirs
    assert arq_deserialize(ours) == {
        "t": None,
        "f": "chat_completion",
        "a": [b"payload"],
        "k": {},
        "et": 1234,
    }
