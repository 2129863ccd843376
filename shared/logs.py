"""Log formatting for every process: text (the default) or one JSON object per line, redacted.

`LOG_FORMAT=json` writes `{"time", "level", "logger", "process", "message", ...}` per record,
encoded with msgspec. A request's fields travel with the record through `logging`'s `extra=`
(`log.info("...", extra={"request_id": rid, "status": 502})`): nothing is kept per request, so
a request that logs nothing costs nothing. Both formats pass the message, the traceback and
every string field through `shared.redact`, so no call site has to remember it.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from shared.redact import redact

# The fields a record may carry about its request, in the order they are written; `extra=` with
# any of these names adds them to the line. trace_id is written when a record carries one.
REQUEST_FIELDS = (
    "request_id",
    "key_id",  # a virtual key's public id, never the key
    "provider",
    "model",
    "deployment",
    "cache",
    "status",
    "latency_ms",
    "tokens",
    "cost_usd",
    "attempt",
    "trace_id",
)
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"

_encode = msgspec.json.Encoder(enc_hook=str).encode  # an unexpected field type becomes its str()


def _clean(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


def request_fields(record: logging.LogRecord) -> list[tuple[str, Any]]:
    """The request fields the record carries (None means unknown and is left out), redacted."""
    found = record.__dict__
    return [(name, _clean(found[name])) for name in REQUEST_FIELDS if found.get(name) is not None]


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `time` is ISO 8601 UTC with milliseconds."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": redact(record.getMessage()),
        }
        line.update(request_fields(record))
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return _encode(line).decode()


class TextFormatter(logging.Formatter):
    """The historical text line, redacted, with the record's request fields as ` key=value`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = redact(record.message)
        fields = request_fields(record)
        if fields:
            # The request id is most often in the message already ("request req_1: ..."): once is enough.
            message += "".join(
                f" {name}={value}"
                for name, value in fields
                if not (name == "request_id" and value in message)
            )
        record.message = message  # recomputed by every format(): changing it here is harmless
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return redact(super().formatStack(stack_info))


def log_format(env: Mapping[str, str]) -> str:
    value = env.get("LOG_FORMAT", "text").strip().lower() or "text"
    return value if value in FORMATS else "text"


def configure(env: Mapping[str, str] | None = None) -> None:
    """Root logging for a process: LOG_LEVEL (default INFO) and LOG_FORMAT (text or json), on
    stderr. Replaces any handler already there, so calling it twice does not double lines."""
    env = os.environ if env is None else env
    level = env.get("LOG_LEVEL", "INFO").upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format(env) == "json" else TextFormatter())
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        handlers=[handler],
        force=True,
    )
    logging.captureWarnings(True)  # a library's warning is a log line too (one format, redacted)
