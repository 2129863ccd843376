"""Tracing in-process, into the SDK's in-memory exporter: the spans each hook makes, their
parents across the queue (the job's carrier), their attributes, and nothing when tracing is off."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from edge_front import tracing as front_tracing
from edge_workers import tracing as worker_tracing
from edge_workers.publishing import Publication
from edge_workers.upstream import Outcome
from shared import tracing
from shared.config import ConfigError, Deployment
from shared.errors import error_body
from shared.queue import Job, Reply, decode_job, encode_job
from shared.wire import Usage

CLIENT_PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
COMPLETION = (
    b'{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}'
)
PROMPT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"secret plan: capital of France?"}]}'
DEPLOYMENT = Deployment(
    "gpt-4o-mini", "openai", "gpt-4o-mini", "http://up/v1", "OPENAI_API_KEY", id="gpt-4o-mini#0"
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_provider(provider)
    try:
        yield exporter
    finally:
        tracing.turn_off()


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in exporter.get_finished_spans()}


def job(**fields: Any) -> Job:
    return Job(
        job_id="j1",
        request_id="req_1",
        reply_to="r",
        provider="openai",
        deployment_id=DEPLOYMENT.id,
        upstream_model="gpt-4o-mini",
        body=PROMPT,
        deadline=0.0,
        **fields,
    )


async def _asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    status = 404 if scope["path"].endswith("/nowhere") else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"x-request-id", b"req_1")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "headers": headers}
    await app(scope, receive, send)
    return sent


async def test_server_span_continues_the_client_trace_and_answers_its_ids(spans) -> None:
    app = front_tracing.TracedApp(_asgi_ok)
    sent = await call(app, "/v1/chat/completions", [(b"traceparent", CLIENT_PARENT.encode())])
    (span,) = spans.get_finished_spans()
    assert span.name == "POST /v1/chat/completions" and span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent is not None and format(span.parent.span_id, "016x") == "b7ad6b7169203331"
    assert span.attributes["http.response.status_code"] == 200
    headers = dict(sent[0]["headers"])
    assert headers[b"x-trace-id"] == b"0af7651916cd43dd8448eb211c80319c"
    assert (
        headers[b"traceparent"]
        == f"00-0af7651916cd43dd8448eb211c80319c-{span.context.span_id:016x}-01".encode()
    )
    assert headers[b"x-request-id"] == b"req_1"  # the app's own headers stay


async def test_server_span_starts_a_trace_and_leaves_other_paths_alone(spans) -> None:
    app = front_tracing.TracedApp(_asgi_ok)
    sent = await call(app, "/v1/chat/completions", [(b"traceparent", b"not-a-traceparent")])
    (span,) = spans.get_finished_spans()
    assert span.parent is None  # a malformed traceparent is ignored, not an error
    assert dict(sent[0]["headers"])[b"x-trace-id"] == format(span.context.trace_id, "032x").encode()
    await call(app, "/health", [])
    await call(app, "/metrics", [])
    assert len(spans.get_finished_spans()) == 1  # probes and scrapes make no traces
    await call(app, "/v1/nowhere", [])
    assert spans.get_finished_spans()[-1].name == "POST"  # an unknown path is not a span name


async def test_stage_spans_are_children_of_the_request(spans) -> None:
    calls: list[str] = []

    def l1_get(state: Any, key: str) -> None:
        calls.append("l1")
        return None

    async def l2_get(state: Any, key: str) -> tuple[str, bytes]:
        calls.append("l2")
        return "hit-l2", b"{}"

    state = SimpleNamespace(settings=SimpleNamespace(enable_l2_cache=True))
    with tracing.tracer.start_as_current_span("request"):
        hit = await front_tracing.cache_lookup(state, "k", l1_get, l2_get, l2=True)

        async def choose() -> tuple[Deployment, int]:
            return DEPLOYMENT, 0

        chosen = await front_tracing.routing_decision(choose(), 1)
        front_tracing.cache_write(SimpleNamespace(set=lambda *a: calls.append("set")), "k", b"{}", 0.0)
        front_tracing.response_build().end()
    assert hit == ("hit-l2", b"{}") and chosen == (DEPLOYMENT, 0) and calls == ["l1", "l2", "set"]
    found = by_name(spans)
    request = found["request"].context.span_id
    for name in ("cache_lookup", "routing_decision", "cache_write", "response_build"):
        assert found[name].parent.span_id == request, name
    for name in ("l1_get", "l2_get"):
        assert found[name].parent.span_id == found["cache_lookup"].context.span_id
    assert found["cache_lookup"].attributes["edge.cache"] == "hit-l2"
    assert found["routing_decision"].attributes["edge.deployment"] == DEPLOYMENT.id


async def test_an_l1_hit_makes_no_l2_span(spans) -> None:
    async def never(state: Any, key: str) -> None:
        raise AssertionError("L2 asked after an L1 hit")

    state = SimpleNamespace(settings=SimpleNamespace(enable_l2_cache=True))
    hit = await front_tracing.cache_lookup(state, "k", lambda s, k: ("hit-l1", b"{}"), never, l2=True)
    assert hit == ("hit-l1", b"{}") and "l2_get" not in by_name(spans)


async def test_producer_consumer_client_chain_across_the_job(spans) -> None:
    """SERVER → PRODUCER (attempt 2) → [job bytes] → CONSUMER → CLIENT, with GenAI attributes."""
    carried: dict[str, dict[str, str]] = {}

    async def attempt() -> tuple[Reply, bool]:
        carried["trace"] = front_tracing.job_context()
        return Reply("j1", status=200, body=COMPLETION), False

    with tracing.tracer.start_as_current_span("POST /v1/chat/completions", kind=SpanKind.SERVER):
        await front_tracing.attempt(attempt(), DEPLOYMENT, 2)
    # The worker sees only what travelled in the job's bytes.
    received = decode_job(encode_job(job(key_id="3f9c12ab45de67f0", trace=carried["trace"])))

    async def upstream() -> Outcome:
        return Outcome(200, COMPLETION, Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15))

    async def run() -> None:
        await worker_tracing.chat_call(received, DEPLOYMENT, upstream())

    await worker_tracing.consume({"job_try": 1}, received, run())
    found = by_name(spans)
    server, producer = found["POST /v1/chat/completions"], found["send edge:queue:openai"]
    consumer, client = found["process edge:queue:openai"], found["chat gpt-4o-mini"]
    assert len({s.context.trace_id for s in found.values()}) == 1
    assert producer.parent.span_id == server.context.span_id
    assert consumer.parent.span_id == producer.context.span_id
    assert client.parent.span_id == consumer.context.span_id
    assert (producer.kind, consumer.kind, client.kind) == (
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.CLIENT,
    )
    assert producer.attributes["edge.attempt"] == 2 and consumer.attributes["edge.attempt"] == 2
    assert producer.attributes["messaging.message.id"] == "j1"
    assert consumer.attributes["edge.key_id"] == "3f9c12ab45de67f0"
    assert dict(client.attributes) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id": "chatcmpl-1",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 3,
        "edge.deployment": DEPLOYMENT.id,
        "edge.stream": False,
    }
    texts = str([dict(s.attributes) for s in found.values()])
    assert "secret plan" not in texts and "Paris" not in texts  # no content unless asked


async def test_failures_mark_spans_with_error_type(spans) -> None:
    async def attempt() -> tuple[Reply, bool]:
        return Reply("j1", status=502, body=error_body(502, "upstream down")), False

    await front_tracing.attempt(attempt(), DEPLOYMENT, 1)

    async def upstream() -> Outcome:
        return Outcome(429, error_body(429, "slow down"), attempted=True)

    await worker_tracing.chat_call(job(), DEPLOYMENT, upstream())
    found = by_name(spans)
    for name, error in (("send edge:queue:openai", "502"), ("chat gpt-4o-mini", "429")):
        assert found[name].status.status_code is StatusCode.ERROR
        assert found[name].attributes["error.type"] == error


async def test_a_stream_records_its_first_chunk_and_its_end(spans) -> None:
    done = Reply("j1", kind="done", body=COMPLETION, prompt_tokens=12, completion_tokens=3)

    async def streamed() -> str:
        worker_tracing.published(Publication([Reply("j1", kind="chunk", body=b"{}")], first_chunks=True))
        worker_tracing.published(Publication([Reply("j1", kind="chunk", body=b"{}")]))
        worker_tracing.published(Publication([done]))
        return "ok"

    assert await worker_tracing.stream_call(job(stream=True), DEPLOYMENT, streamed()) == "ok"
    (client,) = spans.get_finished_spans()
    assert [e.name for e in client.events] == ["gen_ai.first_chunk"]
    assert client.attributes["gen_ai.response.time_to_first_chunk"] >= 0
    assert client.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert client.attributes["gen_ai.usage.output_tokens"] == 3


async def test_content_only_when_asked(spans) -> None:
    tracing.CONTENT = True

    async def upstream() -> Outcome:
        return Outcome(200, COMPLETION, Usage(prompt_tokens=12, completion_tokens=3, total_tokens=15))

    await worker_tracing.chat_call(job(), DEPLOYMENT, upstream())
    (client,) = spans.get_finished_spans()
    assert "secret plan" in client.attributes["gen_ai.input.messages"]
    assert msgspec.json.decode(client.attributes["gen_ai.output.messages"])[0]["content"] == "Paris."


def test_log_lines_inside_a_span_carry_its_trace_id(spans, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edge.test")
    caplog.handler.addFilter(tracing.TraceIdFilter())
    with tracing.tracer.start_as_current_span("request") as span:
        logging.getLogger("edge.test").info("inside")
    logging.getLogger("edge.test").info("outside")
    inside, outside = caplog.records
    assert inside.trace_id == format(span.get_span_context().trace_id, "032x")  # type: ignore[attr-defined]
    assert getattr(outside, "trace_id", None) is None


def test_jobs_with_and_without_trace_read_each_other() -> None:
    """Rolling deploys: an old worker reads a new front's job, a new worker an old front's."""

    class OldJob(msgspec.Struct, frozen=True):
        job_id: str
        request_id: str
        reply_to: str
        provider: str
        deployment_id: str
        upstream_model: str
        body: bytes
        deadline: float

    new = job(trace={"traceparent": CLIENT_PARENT, "attempt": "1"})
    assert msgspec.msgpack.decode(encode_job(new), type=OldJob).job_id == "j1"
    old = msgspec.msgpack.encode(
        OldJob("j1", "req_1", "r", "openai", DEPLOYMENT.id, "gpt-4o-mini", b"{}", 0.0)
    )
    assert decode_job(old).trace is None


def test_setup_reads_the_environment() -> None:
    assert tracing.setup("edge-front", {}) is False
    assert tracing.setup("edge-front", {"ENABLE_TRACING": "false"}) is False
    assert tracing.setup("edge-front", {"ENABLE_TRACING": "true", "OTEL_SDK_DISABLED": "true"}) is False
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc'"):
        tracing.setup("edge-front", {"ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json'"):
        tracing.setup(
            "edge-front", {"ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}
        )
    with pytest.raises(ConfigError, match="ENABLE_TRACING"):
        tracing.setup("edge-front", {"ENABLE_TRACING": "maybe"})
    assert tracing.ON is False


def test_off_imports_no_opentelemetry() -> None:
    """With tracing off, both tiers run without loading any of it."""
    code = (
        "import sys; import edge_front.app, edge_front.chat, edge_workers.worker, edge_workers.jobs; "
        "from shared import tracing; assert not tracing.setup('x', {}); "
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
