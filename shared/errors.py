"""Errors in OpenAI's envelope, with the status the OpenAI SDK maps to the right exception."""

from __future__ import annotations

from shared.wire import ErrorDetail, ErrorEnvelope, json_encoder

# Default (type, code) per status, following what OpenAI itself answers.
_DEFAULTS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout_error", "request_timeout"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", None),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", None),
    502: ("upstream_error", "bad_gateway"),
    503: ("service_unavailable", "service_unavailable"),
    504: ("timeout_error", "gateway_timeout"),
}


def error_body(
    status: int,
    message: str,
    type_: str | None = None,
    param: str | None = None,
    code: str | None = None,
) -> bytes:
    default_type, default_code = _DEFAULTS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    detail = ErrorDetail(message=message, type=type_ or default_type, param=param, code=code or default_code)
    return json_encoder.encode(ErrorEnvelope(error=detail))


DEADLINE_MESSAGE = "The request's deadline passed before its answer was complete."
# Every final failure tells the OpenAI SDK not to retry: the gateway already retried what was
# worth retrying, and a retry after a deadline would only repeat the upstream calls.
NO_RETRY = {"x-should-retry": "false"}


def deadline_body() -> bytes:
    """The one 504 every deadline ends in, wherever it passed (queue, upstream, stream)."""
    return error_body(504, DEADLINE_MESSAGE, code="deadline_exceeded")


class EdgeError(Exception):
    """An error answered to the client as an OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type_ = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.type_, self.param, self.code)


def deadline_error() -> EdgeError:
    return EdgeError(504, DEADLINE_MESSAGE, code="deadline_exceeded", headers=dict(NO_RETRY))
