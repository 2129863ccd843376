"""The lines a request leaves: the worker's failed-job line and the front's access line."""

from __future__ import annotations

import logging

import pytest

from edge_front import access_log
from edge_front.access_log import RequestFacts
from edge_workers.joblog import MAX_MESSAGE_CHARS, error_summary, log_failure
from shared.config import Settings
from shared.errors import error_body
from shared.queue import Job

JOB = Job(
    job_id="j1",
    request_id="req_1",
    reply_to="r",
    provider="openai",
    deployment_id="gpt-4o#0",
    upstream_model="gpt-4o",
    body=b"{}",
    deadline=0.0,
    key_id="3f9c12ab45de67f0",
)


def test_error_summary_names_type_code_and_message() -> None:
    body = error_body(
        400, "This model's maximum context length is 8192 tokens", code="context_length_exceeded"
    )
    assert error_summary(body) == (
        "invalid_request_error (context_length_exceeded): This model's maximum context length is 8192 tokens"
    )
    long = error_summary(error_body(502, "x" * 1000))
    assert long == "upstream_error (bad_gateway): " + "x" * MAX_MESSAGE_CHARS + "..."
    assert error_summary(b"<html>proxy error</html>") == "no error envelope (24 bytes)"


@pytest.mark.parametrize(("status", "level"), [(400, logging.INFO), (502, logging.WARNING)])
def test_a_failed_job_says_why_with_its_request_fields(caplog, status: int, level: int) -> None:
    caplog.set_level(logging.INFO, logger="edge.worker")
    log_failure(JOB, status, error_body(status, "bad things", type_="invalid_request_error", code="x"), 12.5)
    (record,) = caplog.records
    assert record.levelno == level
    assert record.getMessage() == f"request req_1: answered {status}, invalid_request_error (x): bad things"
    fields = {k: getattr(record, k) for k in ("request_id", "key_id", "provider", "deployment", "model")}
    assert fields == {
        "request_id": "req_1",
        "key_id": "3f9c12ab45de67f0",
        "provider": "openai",
        "deployment": "gpt-4o#0",
        "model": "gpt-4o",
    }
    assert (record.status, record.latency_ms) == (status, 12.5)  # type: ignore[attr-defined]


def facts() -> RequestFacts:
    f = RequestFacts()
    f.provider, f.model, f.deployment, f.cache = "openai", "gpt-4o", "gpt-4o#0", "miss"
    f.attempts, f.tokens, f.cost_usd = 2, 42, 0.000135
    return f


def test_the_access_line_carries_the_request(caplog) -> None:
    settings = Settings(access_log=True)
    access_log.configure(settings)
    caplog.set_level(logging.INFO, logger="edge.access")
    access_log.write(settings, "req_9", None, facts(), 200, 12.3456)
    (record,) = caplog.records
    assert record.getMessage() == "request req_9: 200 in 12.3 ms"
    got = {
        k: getattr(record, k) for k in ("request_id", "key_id", "provider", "model", "deployment", "cache")
    }
    assert got == {
        "request_id": "req_9",
        "key_id": None,  # the master key: no key id
        "provider": "openai",
        "model": "gpt-4o",
        "deployment": "gpt-4o#0",
        "cache": "miss",
    }
    more = {k: getattr(record, k) for k in ("status", "latency_ms", "tokens", "cost_usd", "attempt")}
    assert more == {"status": 200, "latency_ms": 12.346, "tokens": 42, "cost_usd": 0.000135, "attempt": 2}


def test_access_lines_are_sampled(caplog, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, logger="edge.access")
    none = Settings(access_log=True, access_log_sample=0.0)
    for _ in range(50):
        access_log.write(none, "req_x", None, RequestFacts(), 200, 1.0)
    assert caplog.records == []
    tenth = Settings(access_log=True, access_log_sample=0.1)
    draws = iter([0.05, 0.5, 0.09999, 0.1])
    monkeypatch.setattr(access_log.random, "random", lambda: next(draws))
    for _ in range(4):
        access_log.write(tenth, "req_y", None, RequestFacts(), 200, 1.0)
    assert len(caplog.records) == 2


def test_on_means_shown_whatever_the_log_level() -> None:
    logger = logging.getLogger("edge.access")
    saved = logger.level
    try:
        logger.setLevel(logging.NOTSET)
        access_log.configure(Settings())
        assert logger.level == logging.NOTSET  # off: left alone
        access_log.configure(Settings(access_log=True))
        assert logger.level == logging.INFO
    finally:
        logger.setLevel(saved)
