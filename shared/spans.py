"""Spans recorded without the SDK's `Span` object: each ends as the SDK's own `ReadableSpan`,
handed to the provider's span processors (the batch processor and the OTLP exporter, or a
test's in-memory exporter), exactly what the SDK's spans become when they end.

Why: the SDK's `Span` costs ~15 µs to start and end (a lock per span, every attribute cleaned on
every set, the sampler's and the processors' plumbing) and a miss records ten of them on the
request's path: +0.36 ms at c=1, against the ≤ 0.3 ms tracing may add. A `LeanSpan` keeps its
attributes in a plain dict and costs ~3 µs. What stays the SDK's: the sampler's decision (made
as `Tracer.start_span` makes it: parent, trace id, name, kind, attributes), the id generator,
the resource and the span limits on attribute count and length. What a LeanSpan leaves out:
processors' `on_start` (the batch and simple processors' do nothing) and links (none made here).
The gateway sets only strings, numbers, booleans and lists of strings as attribute values.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

SCOPE = InstrumentationScope("llm-edge-agent")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSET = Status(StatusCode.UNSET)


class Recorder:
    """Starts spans for one tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.sampler = provider.sampler
        self.ids = provider.id_generator
        self.resource = provider.resource
        # The provider's span processors (all of them, as the SDK's spans reach them); private,
        # but the SDK's only handle on them.
        self.processor = provider._active_span_processor
        limits = provider._span_limits
        self.max_attributes = limits.max_span_attributes
        self.max_length = limits.max_span_attribute_length

    def start(
        self, name: str, kind: SpanKind, attributes: Mapping[str, Any] | None, context: Any = None
    ) -> trace_api.Span:
        """A span, child of the span current in `context` (or in the current context); a
        NonRecordingSpan carrying the trace on when the sampler drops it."""
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        if parent is not None and parent.is_valid:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        else:
            parent, trace_id, random = None, self.ids.generate_trace_id(), self.ids.is_trace_id_random()
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, ())
        flags = _SAMPLED if result.decision.is_sampled() else _NOT_SAMPLED
        if random:
            flags = TraceFlags(flags | TraceFlags.RANDOM_TRACE_ID)
        span_context = SpanContext(
            trace_id,
            self.ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        if not result.decision.is_recording():
            return NonRecordingSpan(span_context)
        return LeanSpan(self, name, span_context, parent, kind, dict(result.attributes or ()))


class LeanSpan(trace_api.Span):
    """A recording span: the API the gateway's tracing modules use, a ReadableSpan at its end."""

    def __init__(
        self,
        recorder: Recorder,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: dict[str, Any],
    ) -> None:
        self._recorder = recorder
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self.attributes = attributes
        self._events: list[Event] = []
        self._status = _UNSET
        self.start_time = time.time_ns()
        self._ended = False

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return not self._ended

    def set_attribute(self, key: str, value: Any) -> None:
        if not self._ended:
            self.attributes[key] = tuple(value) if isinstance(value, list) else value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        for key, value in attributes.items():
            self.set_attribute(key, value)

    def add_event(
        self, name: str, attributes: Mapping[str, Any] | None = None, timestamp: int | None = None
    ) -> None:
        if not self._ended:
            self._events.append(Event(name, attributes, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Mapping[str, Any] | None = None) -> None:
        """Links are never made here: ignored."""

    def update_name(self, name: str) -> None:
        self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended or self._status.status_code is StatusCode.OK:
            return  # as the SDK: OK is final
        self._status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Mapping[str, Any] | None = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An `exception` event, with the attributes the SDK gives one."""
        module, qualname = type(exception).__module__, type(exception).__qualname__
        event = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins" else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
            **(attributes or {}),
        }
        self.add_event("exception", event, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        recorder = self._recorder
        self._recorder.processor.on_end(
            ReadableSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=recorder.resource,
                attributes=_limited(self.attributes, recorder.max_attributes, recorder.max_length),
                events=self._events,
                kind=self._kind,
                status=self._status,
                start_time=self.start_time,
                end_time=end_time or time.time_ns(),
                instrumentation_scope=SCOPE,
            )
        )


def _limited(attributes: dict[str, Any], count: int | None, length: int | None) -> dict[str, Any]:
    """The span limits (OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT) as
    the SDK applies them: the first `count` attributes, strings cut at `length`."""
    if count is not None and len(attributes) > count:
        attributes = dict(list(attributes.items())[:count])
    if length is not None:
        attributes = {k: _cut(v, length) for k, v in attributes.items()}
    return attributes


def _cut(value: Any, length: int) -> Any:
    if isinstance(value, str):
        return value[:length]
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return tuple(v[:length] if isinstance(v, str) else v for v in value)
    return value
