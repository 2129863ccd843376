"""shared.logs: the JSON and text formats, their request fields, and redaction in both."""

from __future__ import annotations

import io
import logging
import re
import sys
from collections.abc import Iterator

import msgspec
import pytest

from shared import logs


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    logger = logging.getLogger("edge.test-logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield logger, out, handler
    finally:
        logger.removeHandler(handler)


def test_json_line_has_the_required_fields_and_the_known_request_fields(capture) -> None:
    logger, out, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    logger.warning(
        "request %s: answered %d",
        "req_1",
        400,
        extra={
            "request_id": "req_1",
            "key_id": "3f9c12ab45de67f0",
            "status": 400,
            "latency_ms": 12.5,
            "tokens": 30,
            "cost_usd": 0.000135,
            "provider": "openai",
            "model": None,
        },
    )
    line = msgspec.json.decode(out.getvalue().strip())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("time"))
    assert line == {
        "level": "WARNING",
        "logger": "edge.test-logs",
        "process": logging.LogRecord("", 0, "", 0, "", None, None).process,
        "message": "request req_1: answered 400",
        "request_id": "req_1",
        "key_id": "3f9c12ab45de67f0",
        "provider": "openai",
        "status": 400,
        "latency_ms": 12.5,
        "tokens": 30,
        "cost_usd": 0.000135,
    }  # model=None: unknown, left out


def test_json_redacts_the_message_its_string_fields_and_the_traceback(capture) -> None:
    logger, out, handler = capture
    handler.setFormatter(logs.JsonFormatter())
    try:
        raise ValueError("card 4111 1111 1111 1111")
    except ValueError:
        logger.exception("failed for %s", "bob@example.com", extra={"model": "sk-abcdef123456"})
    text = out.getvalue()
    assert text.count("\n") == 1  # one line, the traceback inside it
    line = msgspec.json.decode(text)
    assert line["message"] == "failed for [REDACTED:email]"
    assert line["model"] == "[REDACTED:api_key]"
    assert "ValueError: card [REDACTED:card]" in line["exc"]
    assert "4111" not in text and "bob@" not in text and "sk-abc" not in text


def test_text_keeps_the_old_line_and_adds_the_request_fields(capture) -> None:
    logger, out, handler = capture
    handler.setFormatter(logs.TextFormatter())
    logger.info("request %s: answered %d", "req_7", 502, extra={"request_id": "req_7", "status": 502})
    logger.info("to 10.0.0.1", extra={"request_id": "req_8", "provider": "openai"})
    first, second = out.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO edge\.test-logs\[\d+\] "
        r"request req_7: answered 502 status=502",
        first,
    )  # the request id once: it is in the message already
    assert second.endswith("] to [REDACTED:ip] request_id=req_8 provider=openai")


def test_text_redacts_tracebacks(capture) -> None:
    logger, out, handler = capture
    handler.setFormatter(logs.TextFormatter())
    try:
        raise RuntimeError("Bearer abcdefgh12345678")
    except RuntimeError:
        logger.exception("boom")
    assert "abcdefgh" not in out.getvalue()
    assert "RuntimeError: [REDACTED:bearer]" in out.getvalue()


@pytest.mark.parametrize(
    ("env", "formatter"),
    [
        ({}, logs.TextFormatter),
        ({"LOG_FORMAT": "json"}, logs.JsonFormatter),
        ({"LOG_FORMAT": " JSON "}, logs.JsonFormatter),
        ({"LOG_FORMAT": "xml"}, logs.TextFormatter),
    ],
)
def test_configure_installs_one_stderr_handler(env: dict[str, str], formatter: type) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure({**env, "LOG_LEVEL": "warning"})
        logs.configure({**env, "LOG_LEVEL": "warning"})  # twice: still one handler
        assert len(root.handlers) == 1
        handler = root.handlers[0]
        assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
        assert type(handler.formatter) is formatter
        assert root.level == logging.WARNING
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
