"""OpenTelemetry tracing for both tiers: set-up from the environment, and W3C trace context.

Off (the default), nothing imports opentelemetry: every hook in a hot module is one check of the
module-level `ON`, and the tier's own tracing module (`edge_front.tracing`,
`edge_workers.tracing`) is only imported behind it. On (`ENABLE_TRACING=true`), `setup` builds
the SDK's tracer provider from the standard `OTEL_*` variables (service name, resource
attributes, sampler, OTLP endpoint and headers, batch processor delays: the SDK reads them
itself) and exports over OTLP/HTTP with protobuf from a background thread.

A trace crosses the queue in the job: the front writes the W3C `traceparent` (and
`tracestate`) of its PRODUCER span into `Job.trace`, and the worker continues it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

from shared.config_error import ConfigError
from shared.settings import env_bool

T = TypeVar("T")
ON = False  # ENABLE_TRACING: the one check every hook in a hot module makes
CONTENT = False  # EDGE_TRACE_CONTENT: record prompts and answers on spans (off: never)
tracer: Any = None  # opentelemetry.trace.Tracer once `setup` turned tracing on
_recorder: Any = None  # shared.spans.Recorder: how the gateway's own spans are made (see there)
# The OpenTelemetry API names the tiers use, bound once tracing is on: a module that imports
# this one imports no opentelemetry while tracing is off.
SERVER = CLIENT = PRODUCER = CONSUMER = INTERNAL = None
_trace_api: Any = None
_context_api: Any = None
_error_status: Any = None
_propagator: Any = None
_provider: Any = None

PROTOCOLS = ("http/protobuf",)
log = logging.getLogger("edge.tracing")


def setup(default_service: str, env: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process if ENABLE_TRACING says so (and OTEL_SDK_DISABLED does
    not); returns whether it is on. Raises ConfigError for a bad value. `default_service` is the
    service name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name one."""
    global ON, CONTENT, tracer, _propagator, _provider
    env = os.environ if env is None else env
    if not env_bool(env, "ENABLE_TRACING", False) or env_bool(env, "OTEL_SDK_DISABLED", False):
        return False
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(variable, "").strip()
        if protocol:
            break
    if protocol and protocol not in PROTOCOLS:
        raise ConfigError(
            f"{variable}: {protocol!r} is not supported; the gateway exports "
            f"traces over {' or '.join(PROTOCOLS)} (point it at the collector's OTLP/HTTP port, 4318)"
        )
    CONTENT = env_bool(env, "EDGE_TRACE_CONTENT", False)
    if _provider is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        class FixedResource(Resource):
            """The exporter groups spans by resource, hashing it once per span (a json.dumps of
            its attributes: a fifth of the encoding's CPU); this one never changes, so its hash
            is computed once."""

            @functools.cached_property
            def _hash(self) -> int:
                return super().__hash__()

            def __hash__(self) -> int:
                return self._hash

        resource = Resource.create()  # OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: default_service}))
        resource = FixedResource(resource.attributes, resource.schema_url)
        # The sampler comes from OTEL_TRACES_SAMPLER(_ARG) (default: parent-based, always on);
        # the batch processor's delays and sizes from OTEL_BSP_*; the exporter's endpoint,
        # headers, timeout and compression from OTEL_EXPORTER_OTLP_*.
        _provider = TracerProvider(resource=resource)
        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        _propagator = TraceContextTextMapPropagator()
    _activate(_provider)
    log.info("tracing on: service %s", _provider.resource.attributes.get("service.name"))
    return True


def use_provider(provider: Any) -> None:
    """Trace into `provider` (the unit tests' in-memory exporter): as `setup`, without env."""
    global _provider, _propagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _provider, _propagator = provider, TraceContextTextMapPropagator()
    _activate(provider)


def _activate(provider: Any) -> None:
    global ON, tracer, SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL, _trace_api, _context_api, _error_status
    global _recorder
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from shared.spans import Recorder

    _trace_api, _context_api, _error_status = trace, context, Status(StatusCode.ERROR)
    SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
        SpanKind.SERVER,
        SpanKind.CLIENT,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.INTERNAL,
    )
    tracer = provider.get_tracer("llm-edge-agent")
    _recorder = Recorder(provider)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())
    ON = True


def turn_off() -> None:
    """Back to no tracing (tests)."""
    global ON, CONTENT
    ON = CONTENT = False


def start(name: str, kind: Any = None, attributes: dict[str, Any] | None = None, parent: Any = None) -> Any:
    """A started span, child of `parent` (an OTel Context) or else of the current span: a
    `shared.spans.LeanSpan` (a fifth of the SDK's Span's cost), or non-recording if sampled out."""
    return _recorder.start(name, kind or INTERNAL, attributes, parent)


def enter(span: Any) -> object:
    """Make `span` the current one (its children and log lines see it); give the token to `leave`."""
    return _context_api.attach(_trace_api.set_span_in_context(span))


def context_of(span: Any) -> Any:
    """A Context whose current span is `span`: the parent to give its children."""
    return _trace_api.set_span_in_context(span)


def leave(token: object) -> None:
    _context_api.detach(token)


def current() -> Any:
    return _trace_api.get_current_span()


async def inside(span: Any, work: Awaitable[T]) -> T:
    """Await `work` with `span` current, then end it (an exception marks it failed)."""
    token = enter(span)
    try:
        return await work
    except BaseException as e:
        failed(span, type(e).__qualname__)
        raise
    finally:
        leave(token)
        span.end()


def failed(span: Any, error_type: str) -> None:
    """Mark `span` failed: status ERROR and the semantic conventions' `error.type`."""
    span.set_status(_error_status)
    span.set_attribute("error.type", error_type)


def extract(carrier: Mapping[str, str]) -> Any:
    """The remote parent in a W3C carrier (`traceparent`, `tracestate`), as an OTel Context;
    an empty Context when there is none or it is malformed."""
    return _propagator.extract(carrier)


def carrier_of(context: Any = None) -> dict[str, str]:
    """The W3C carrier of the current (or given) context's span."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return carrier


def trace_id_hex(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


class TraceIdFilter(logging.Filter):
    """Writes the current span's trace id into the `trace_id` field of log lines (shared.logs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.__dict__.get("trace_id") is None:
            context = _trace_api.get_current_span().get_span_context()
            if context.is_valid:
                record.trace_id = format(context.trace_id, "032x")
        return True
