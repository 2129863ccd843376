"""Logs of real processes: LOG_FORMAT=json and the access log on, prompts full of PII and
secrets, upstream errors that quote them back. Every line of every gateway process must be one
JSON object with the required fields, every request must have its access line, the failed jobs
must say why, and no PII or secret may appear anywhere."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from tests.integration.conftest import wait_until

# What must never reach a log, whatever the request does with it.
SECRETS = {
    "email": "jane.doe@example.com",
    "card": "4111 1111 1111 1111",
    "card_plain": "5555555555554444",
    "phone": "+1 415 555 2671",
    "ssn": "123-45-6789",
    "api_key": "sk-proj-Zx8Qw2Lk9Pm4Rt6Yu1",
    "anthropic_key": "sk-ant-api03-Hh7Jj8Kk9Ll0Mm1Nn2",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "bearer": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
}
PII = " ".join(f"{kind}: {value}." for kind, value in SECRETS.items())
REQUIRED = ("time", "level", "logger", "process", "message")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevStack, Front, Path]]:
    logs = tmp_path_factory.mktemp("json-logs")
    overrides = {
        "EDGE_MAX_ATTEMPTS": "1",
        "EDGE_BREAKER_FAILURES": "1000000",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",  # the 4xx failure lines are INFO
        "EDGE_ACCESS_LOG": "true",
    }
    dev = DevStack(env_overrides=overrides, log_dir=logs)
    try:
        front = dev.start()
        yield dev, front, logs
    finally:
        dev.stop()


def sdk(front: Front, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0, timeout=30)


def lines(logs: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(file name, line) of every non-empty line of the stack's log files."""
    return [
        (path.name, line)
        for path in sorted(logs.glob(f"{prefix}*.log"))
        for line in path.read_text(errors="replace").splitlines()
        if line.strip()
    ]


def records(logs: Path) -> list[dict[str, Any]]:
    """Every line of the gateway's own processes, decoded (fails on a line that is not JSON)."""
    found = []
    for name, line in lines(logs, "front") + lines(logs, "worker"):
        try:
            found.append(msgspec.json.decode(line))
        except msgspec.DecodeError:
            pytest.fail(f"{name}: not a JSON line: {line!r}")
    return found


def access_line(logs: Path, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next(
            (r for r in records(logs) if r["logger"] == "edge.access" and r.get("request_id") == request_id),
            None,
        )

    return wait_until(find, f"the access line of {request_id}")


def rid(name: str) -> str:
    return f"req_logs_{name}_{uuid.uuid4().hex[:8]}"


def test_json_lines_access_lines_failure_reasons_and_no_pii(stack) -> None:
    dev, front, logs = stack
    messages: Any = [{"role": "user", "content": f"Please remember {PII} {uuid.uuid4().hex}"}]
    names = ("ok", "hit", "stream", "sbad", "bad", "down", "claude", "vkey")
    ids: dict[str, str] = {name: rid(name) for name in names}

    def ask(
        name: str, model: str = "gpt-4o-mini", prompt: Any = messages, key: str = MASTER_KEY, **kw: Any
    ) -> Any:
        headers = {"x-request-id": ids[name]}
        return sdk(front, key).chat.completions.create(
            model=model, messages=prompt, extra_headers=headers, **kw
        )

    ask("ok")
    assert ask("hit").choices[0].message.content  # the same prompt: an L1 hit
    streamed = [{"role": "user", "content": f"Stream it: {PII} {uuid.uuid4().hex}"}]
    chunks = ask("stream", prompt=streamed, stream=True, stream_options={"include_usage": True})
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    echo = [{"role": "user", "content": f"[[fake:status=400]][[fake:echo_error]] {PII}"}]
    with pytest.raises(openai.BadRequestError):
        list(ask("sbad", prompt=echo, stream=True))
    with pytest.raises(openai.BadRequestError) as refused:
        ask("bad", prompt=echo)
    assert SECRETS["email"] in refused.value.message  # the client gets the upstream's message as it was
    down = [{"role": "user", "content": f"[[fake:status=500]][[fake:echo_error]] {PII} {uuid.uuid4().hex}"}]
    with pytest.raises(openai.InternalServerError):
        ask("down", prompt=down)
    with pytest.raises(openai.BadRequestError):
        ask("claude", model="claude-3-5-haiku-latest", prompt=echo)
    made = httpx.post(
        f"{front.url}/key/generate",
        json={"key_alias": "logs"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    ask("vkey", key=made["key"])

    ok, hit = access_line(logs, ids["ok"]), access_line(logs, ids["hit"])
    assert (ok["status"], ok["cache"], ok["provider"], ok["model"], ok["attempt"]) == (
        200,
        "miss",
        "openai",
        "gpt-4o-mini",
        1,
    )
    assert ok["tokens"] > 0 and ok["cost_usd"] > 0 and ok["latency_ms"] > 0 and "key_id" not in ok
    assert (hit["status"], hit["cache"], hit["cost_usd"], hit["attempt"]) == (200, "hit-l1", 0.0, 0)
    stream = access_line(logs, ids["stream"])
    assert (stream["status"], stream["cache"]) == (200, "miss") and stream["tokens"] > 0
    assert access_line(logs, ids["sbad"])["status"] == 400
    assert access_line(logs, ids["bad"])["status"] == 400
    assert access_line(logs, ids["down"])["status"] == 502
    assert access_line(logs, ids["claude"])["provider"] == "anthropic"
    assert access_line(logs, ids["vkey"])["key_id"] == made["key_id"]

    def failure(request_id: str) -> dict[str, Any] | None:
        return next(
            (r for r in records(logs) if r["logger"] == "edge.worker" and r.get("request_id") == request_id),
            None,
        )

    bad = wait_until(lambda: failure(ids["bad"]), "the worker's line for the refused request")
    assert bad["level"] == "INFO" and bad["status"] == 400 and bad["provider"] == "openai"
    assert "answered 400, invalid_request_error: Refused prompt: email: [REDACTED:email]" in bad["message"]
    down_line = wait_until(lambda: failure(ids["down"]), "the worker's line for the upstream's 500")
    assert down_line["level"] == "WARNING" and down_line["status"] == 502
    assert "upstream openai error 500" in down_line["message"] and "[REDACTED:card]" in down_line["message"]
    sbad = wait_until(lambda: failure(ids["sbad"]), "the worker's line for the refused stream")
    assert "answered 400" in sbad["message"] and "[REDACTED:ssn]" in sbad["message"]
    claude = wait_until(lambda: failure(ids["claude"]), "the anthropic worker's line")
    assert "Refused prompt" in claude["message"] and claude["provider"] == "anthropic"

    dev.stop()  # every process flushed and gone: now read everything they wrote
    every = records(logs)
    assert every, "the stack wrote no log lines"
    for record in every:
        assert all(field in record for field in REQUIRED), record
        assert record["time"].endswith("Z") and isinstance(record["process"], int)
    forbidden = [*SECRETS.values(), MASTER_KEY, made["key"], "sk-upstream-openai", "sk-upstream-anthropic"]
    for name, line in lines(logs):  # every process, the fake upstream included
        for secret in forbidden:
            assert secret not in line, f"{name} logged {secret!r}: {line}"
