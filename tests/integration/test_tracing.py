"""Traces of real processes: a front and workers with ENABLE_TRACING=true export OTLP over HTTP
to a receiver this module runs (decoded with opentelemetry-proto); beside them a front and a
worker with tracing off, configured with the same endpoint, must export nothing."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import httpx
import msgspec
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.otlp_sink import OtlpSink, ReceivedSpan
from tests.integration.conftest import wait_until

STAGES = ("cache_lookup", "routing_decision", "cache_write", "response_build")


class Stacks(msgspec.Struct):
    dev: DevStack
    traced: Front
    untraced: Front
    no_collector: Front  # traced, exporting to a port nobody listens on
    sink: OtlpSink
    logs: Path


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    sink = OtlpSink().start()
    logs = Path(tmp_path_factory.mktemp("tracing-logs"))
    # Every variable the untraced processes get too: only ENABLE_TRACING differs.
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # the SDK's own knob: spans leave within 50 ms
        "EDGE_MAX_ATTEMPTS": "2",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "EDGE_ACCESS_LOG": "true",
    }
    dev = DevStack(env_overrides={**otel, "ENABLE_TRACING": "true"}, log_dir=logs)
    try:
        dev.start_redis()
        dev.start_upstream()
        untraced_env = {k: v for k, v in dev.env.items() if k != "ENABLE_TRACING"}
        # Traced: the openai worker; untraced: the anthropic one (each front can use both).
        dev.start_worker("openai")
        dev.start_worker("anthropic", env=untraced_env)
        traced = dev.start_front()
        untraced = dev.start_front(env=untraced_env)
        closed = OtlpSink().start()  # a port that was just free: nothing answers there
        closed.stop()
        no_collector = dev.start_front(env={**dev.env, "OTEL_EXPORTER_OTLP_ENDPOINT": closed.endpoint})
        yield Stacks(dev, traced, untraced, no_collector, sink, logs)
    finally:
        dev.stop()
        sink.stop()


def sdk(front: Front, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0, timeout=30)


def unique(text: str) -> str:
    return f"{text} {secrets.token_hex(6)}"


def whole_trace(
    sink: OtlpSink, trace_id: str, names: tuple[str, ...], times: int = 1
) -> dict[str, list[ReceivedSpan]]:
    """The trace's spans by name, once every name in `names` arrived `times` times or more
    (front and worker export on their own schedules; a retried request has a job span, and
    its worker's spans, per attempt)."""

    def arrived() -> dict[str, list[ReceivedSpan]] | None:
        found: dict[str, list[ReceivedSpan]] = {}
        for span in sink.trace(trace_id):
            found.setdefault(span.name, []).append(span)
        return found if all(len(found.get(name, ())) >= times for name in names) else None

    return wait_until(arrived, f"spans {names} of trace {trace_id}")


def one(found: dict[str, list[ReceivedSpan]], name: str) -> ReceivedSpan:
    (span,) = found[name]
    return span


# L2 is in the queue's Redis here: the miss script looks there, inside the PRODUCER span (an
# `l2_get` span is the front's own lookup, with CACHE_REDIS_URL).
MISS_SPANS = (
    "POST /v1/chat/completions",
    *STAGES,
    "l1_get",
    "send edge:queue:openai",
    "process edge:queue:openai",
    "chat gpt-4o-mini",
)


def test_a_miss_is_one_trace_from_server_span_to_upstream_call(stacks: Stacks) -> None:
    made = httpx.post(
        f"{stacks.traced.url}/key/generate",
        json={"key_alias": "traced"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    ).json()
    prompt = unique("The secret plan is to say hello")
    raw = sdk(stacks.traced, made["key"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    completion = raw.parse()
    trace_id = raw.headers["x-trace-id"]
    assert len(trace_id) == 32 and raw.headers["traceparent"].startswith(f"00-{trace_id}-")
    found = whole_trace(stacks.sink, trace_id, MISS_SPANS)

    server = one(found, "POST /v1/chat/completions")
    assert (server.kind, server.service, server.parent_id) == ("SERVER", "edge-front", "")
    assert raw.headers["traceparent"].split("-")[2] == server.span_id  # the header names this span
    assert server.attributes["edge.key_id"] == made["key_id"]
    assert server.attributes["edge.cache"] == "miss"
    assert server.attributes["edge.request_id"] == raw.headers["x-request-id"]
    assert server.attributes["http.response.status_code"] == 200
    for stage in STAGES:
        assert one(found, stage).parent_id == server.span_id, stage
    assert one(found, "l1_get").parent_id == one(found, "cache_lookup").span_id
    assert "l2_get" not in found

    producer = one(found, "send edge:queue:openai")
    consumer = one(found, "process edge:queue:openai")
    client = one(found, "chat gpt-4o-mini")
    assert (producer.kind, producer.parent_id, producer.attributes["edge.attempt"]) == (
        "PRODUCER",
        server.span_id,
        1,
    )
    assert (consumer.kind, consumer.service, consumer.parent_id) == (
        "CONSUMER",
        "edge-worker-openai",
        producer.span_id,
    )
    assert (client.kind, client.parent_id) == ("CLIENT", consumer.span_id)
    assert consumer.attributes["edge.key_id"] == made["key_id"]
    assert consumer.attributes["messaging.message.id"] == producer.attributes["messaging.message.id"]
    usage = completion.usage
    assert usage is not None
    assert {k: v for k, v in client.attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": completion.model,
        "gen_ai.response.id": completion.id,
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
    }
    everything = repr([s.attributes for spans in found.values() for s in spans])
    assert "secret plan" not in everything and made["key"] not in everything

    # A hit of the same request: the SERVER span says which tier; no job, no worker span.
    again = sdk(stacks.traced, made["key"]).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    hit = whole_trace(stacks.sink, again.headers["x-trace-id"], ("POST /v1/chat/completions", "l1_get"))
    assert one(hit, "POST /v1/chat/completions").attributes["edge.cache"] == "hit-l1"
    assert "send edge:queue:openai" not in hit and "l2_get" not in hit

    # The log lines of the request carry its trace id (JSON logs: the access line).
    def access_line() -> dict[str, Any] | None:
        for path in stacks.logs.glob("front-*.log"):
            for line in path.read_text().splitlines():
                if line.startswith("{") and raw.headers["x-request-id"] in line and '"edge.access"' in line:
                    return msgspec.json.decode(line)  # type: ignore[no-any-return]
        return None

    assert wait_until(access_line, "the access line")["trace_id"] == trace_id


def test_a_client_traceparent_is_continued(stacks: Stacks) -> None:
    trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
    raw = sdk(stacks.traced).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": unique("continue my trace")}],
        extra_headers={"traceparent": f"00-{trace_id}-{parent}-01"},
    )
    assert raw.headers["x-trace-id"] == trace_id
    found = whole_trace(stacks.sink, trace_id, MISS_SPANS)
    assert one(found, "POST /v1/chat/completions").parent_id == parent


def test_each_retry_is_its_own_job_span_with_its_number(stacks: Stacks) -> None:
    raw = sdk(stacks.traced).chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": unique("[[fake:status=500]][[fake:times=1]] retry me")}],
    )
    assert raw.headers["x-edge-attempts"] == "2"
    found = whole_trace(stacks.sink, raw.headers["x-trace-id"], MISS_SPANS)
    per_attempt = ("send edge:queue:openai", "process edge:queue:openai", "chat gpt-4o-mini")
    found = whole_trace(stacks.sink, raw.headers["x-trace-id"], per_attempt, times=2)
    producers = sorted(found["send edge:queue:openai"], key=lambda s: s.attributes["edge.attempt"])
    assert [p.attributes["edge.attempt"] for p in producers] == [1, 2]
    assert [p.error for p in producers] == [True, False]
    consumers = {c.parent_id: c for c in found["process edge:queue:openai"]}
    assert set(consumers) == {p.span_id for p in producers}  # one worker span per attempt
    assert [consumers[p.span_id].attributes["edge.attempt"] for p in producers] == [1, 2]
    clients = {c.parent_id: c for c in found["chat gpt-4o-mini"]}
    failed = clients[consumers[producers[0].span_id].span_id]
    assert failed.error and failed.attributes["error.type"] == "502"
    assert len(found["routing_decision"]) == 2


def test_a_stream_records_time_to_first_token(stacks: Stacks) -> None:
    with sdk(stacks.traced).chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": unique("stream to me")}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        trace_id = response.headers["x-trace-id"]
        chunks = list(response.parse())
    assert chunks
    found = whole_trace(stacks.sink, trace_id, MISS_SPANS)
    server = one(found, "POST /v1/chat/completions")
    assert server.events["first_token"]["edge.time_to_first_token_ms"] > 0
    client = one(found, "chat gpt-4o-mini")
    assert client.attributes["edge.stream"] is True
    assert client.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert "gen_ai.first_chunk" in client.events
    assert client.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert client.attributes["gen_ai.usage.output_tokens"] > 0


def test_nothing_is_exported_when_tracing_is_off(stacks: Stacks) -> None:
    """The untraced front and worker have the endpoint but not ENABLE_TRACING."""
    raw = sdk(stacks.untraced).chat.completions.with_raw_response.create(
        model="claude-3-5-haiku-latest", messages=[{"role": "user", "content": unique("untraced")}]
    )
    assert "x-trace-id" not in raw.headers and "traceparent" not in raw.headers
    # The traced front's spans arrive within ~50 ms of their end: after a traced request's
    # spans arrived, anything the untraced processes exported would have too.
    marker = sdk(stacks.traced).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": unique("marker")}]
    )
    whole_trace(stacks.sink, marker.headers["x-trace-id"], MISS_SPANS)
    time.sleep(0.5)
    request_id = raw.headers["x-request-id"]
    assert not [s for s in stacks.sink.spans if s.attributes.get("edge.request_id") == request_id]
    assert {s.service for s in stacks.sink.spans} == {"edge-front", "edge-worker-openai"}


def test_an_unreachable_collector_costs_the_requests_nothing(stacks: Stacks) -> None:
    """Spans are exported from a background thread: a dead collector loses them, not requests."""
    client = sdk(stacks.no_collector)
    started = time.monotonic()
    for i in range(20):
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": unique(f"no collector {i}")}]
        )
        assert raw.http_response.status_code == 200 and raw.headers["x-trace-id"]
    assert time.monotonic() - started < 10  # ~20 ms each; an export blocking requests would take seconds


def test_a_request_that_joins_an_identical_one_in_flight_says_so(stacks: Stacks) -> None:
    """Single flight: the follower's trace shows it joined; the upstream call is in the leader's."""
    messages = [{"role": "user", "content": unique("[[fake:delay_ms=1500]] together")}]

    def ask(wait_s: float) -> Any:
        time.sleep(wait_s)
        return sdk(stacks.traced).chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages
        )

    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(ask, (0.0, 0.3))  # the second starts while the first waits upstream
    by_tier = {raw.headers["x-edge-cache"]: raw for raw in (first, second)}
    assert set(by_tier) == {"miss", "joined"}
    leader = whole_trace(stacks.sink, by_tier["miss"].headers["x-trace-id"], MISS_SPANS)
    follower = whole_trace(
        stacks.sink,
        by_tier["joined"].headers["x-trace-id"],
        ("POST /v1/chat/completions", "send edge:queue:openai"),
    )
    assert one(follower, "POST /v1/chat/completions").attributes["edge.cache"] == "joined"
    assert one(follower, "send edge:queue:openai").attributes["edge.joined"] is True
    assert "process edge:queue:openai" not in follower  # the one upstream call is the leader's
    assert "edge.joined" not in one(leader, "send edge:queue:openai").attributes


def test_a_messages_request_is_traced_the_same_way(stacks: Stacks) -> None:
    """/v1/messages (the Anthropic SDK) to an OpenAI model: its CLIENT span reads the message."""
    client = anthropic.Anthropic(base_url=stacks.traced.url, api_key=MASTER_KEY, max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": unique("hello")}]
    )
    message = raw.parse()
    names = ("POST /v1/messages", "send edge:queue:openai", "process edge:queue:openai", "chat gpt-4o-mini")
    found = whole_trace(stacks.sink, raw.headers["x-trace-id"], names)
    assert one(found, "POST /v1/messages").attributes["edge.cache"] == "miss"
    attributes = one(found, "chat gpt-4o-mini").attributes
    assert attributes["gen_ai.response.finish_reasons"] == (message.stop_reason,)
    assert attributes["gen_ai.usage.output_tokens"] == message.usage.output_tokens
