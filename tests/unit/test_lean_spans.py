"""shared.spans: the gateway's spans end as the SDK's ReadableSpans, sampled, identified, limited
and shaped as the SDK's own Span would have been."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.status import Status

from shared import tracing
from shared.spans import SCOPE, LeanSpan

REMOTE_SAMPLED = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def provider(**options: object) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    made = TracerProvider(**options)  # type: ignore[arg-type]
    made.add_span_processor(SimpleSpanProcessor(exporter))
    return made, exporter


@pytest.fixture(autouse=True)
def _off_after() -> Iterator[None]:
    yield
    tracing.turn_off()


def test_a_lean_span_ends_as_the_sdks_span_would() -> None:
    traced, exporter = provider()
    tracing.use_provider(traced)
    with tracing.tracer.start_as_current_span("sdk parent", kind=SpanKind.SERVER) as parent:
        sdk = tracing.tracer.start_span("stage", attributes={"edge.attempt": 1, "tiers": ["l1", "l2"]})
        sdk.set_status(Status(StatusCode.ERROR))
        sdk.end()
        lean = tracing.start("stage", attributes={"edge.attempt": 1})
        assert isinstance(lean, LeanSpan) and lean.is_recording()
        lean.set_attribute("tiers", ["l1", "l2"])
        tracing.failed(lean, "502")
        lean.end()
        lean.end()  # once only
        lean.set_attribute("late", 1)  # after its end: ignored
    theirs, ours = [s for s in exporter.get_finished_spans() if s.name == "stage"]  # in end order
    assert ours.parent == theirs.parent == parent.get_span_context()
    assert ours.context.trace_id == theirs.context.trace_id and ours.context.span_id != theirs.context.span_id
    assert ours.context.trace_flags == theirs.context.trace_flags and ours.context.trace_flags.sampled
    assert ours.kind is theirs.kind is SpanKind.INTERNAL
    assert ours.resource is traced.resource and ours.instrumentation_scope == SCOPE
    assert dict(ours.attributes) == {"edge.attempt": 1, "tiers": ("l1", "l2"), "error.type": "502"}
    assert ours.status.status_code is StatusCode.ERROR
    assert ours.start_time is not None and ours.end_time is not None and ours.start_time <= ours.end_time
    assert len(exporter.get_finished_spans()) == 3  # the lean span ended once


def test_the_providers_sampler_decides() -> None:
    traced, exporter = provider(sampler=ALWAYS_OFF)
    tracing.use_provider(traced)
    dropped = tracing.start("POST /v1/chat/completions", tracing.SERVER)
    assert not dropped.is_recording() and dropped.get_span_context().is_valid  # the trace goes on
    assert not dropped.get_span_context().trace_flags.sampled
    dropped.end()
    assert exporter.get_finished_spans() == ()
    # parent-based: a sampled remote parent keeps the trace, whatever the ratio for roots
    traced, exporter = provider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    tracing.use_provider(traced)
    root = tracing.start("root", tracing.SERVER)
    assert not root.is_recording()
    child = tracing.start("job", tracing.CONSUMER, parent=tracing.extract({"traceparent": REMOTE_SAMPLED}))
    assert child.is_recording()
    child.end()
    (span,) = exporter.get_finished_spans()
    assert format(span.context.trace_id, "032x") == REMOTE_SAMPLED.split("-")[1]
    assert span.parent is not None and span.parent.is_remote


def test_span_limits_apply() -> None:
    traced, exporter = provider(span_limits=SpanLimits(max_span_attributes=2, max_span_attribute_length=4))
    tracing.use_provider(traced)
    span = tracing.start("s", attributes={"a": "abcdefgh", "b": ["xyzxyz", 1]})
    span.set_attribute("c", 3)
    span.end()
    (done,) = exporter.get_finished_spans()
    assert dict(done.attributes) == {"a": "abcd", "b": ("xyzx", 1)}


def test_exceptions_events_names_and_status() -> None:
    traced, exporter = provider()
    tracing.use_provider(traced)
    span = tracing.start("POST /nowhere", tracing.SERVER)
    try:
        raise ValueError("no such thing")
    except ValueError as e:
        span.record_exception(e)
    span.add_event("first_token", {"edge.time_to_first_token_ms": 1.5})
    span.update_name("POST")
    span.set_status(Status(StatusCode.OK))
    span.set_status(Status(StatusCode.ERROR))  # OK is final, as the SDK has it
    span.end()
    (done,) = exporter.get_finished_spans()
    assert done.name == "POST" and done.status.status_code is StatusCode.OK
    exception, first = done.events
    assert exception.name == "exception" and exception.attributes is not None
    assert exception.attributes["exception.type"] == "ValueError"
    assert exception.attributes["exception.message"] == "no such thing"
    assert "Traceback" in str(exception.attributes["exception.stacktrace"])
    assert first.name == "first_token" and first.attributes == {"edge.time_to_first_token_ms": 1.5}
