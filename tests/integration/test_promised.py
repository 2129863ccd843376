"""Behaviours the README promises that the other integration tests do not pin down: the L2 switch
and timeout, what the cache key ignores, context-window fallbacks, a worker dying mid-stream, the
HTTP edges of the chat endpoint, and the metrics' labelled samples (front and workers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import openai
import pytest
import redis

from edge_agent.children import stop_processes
from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.probes import wait_http
from edge_agent.redis_server import RedisServer, free_port
from edge_front.keys import MASTER_NAMESPACE
from shared import keyspace
from shared.cache_keys import chat_cache_key
from tests.integration.conftest import Samples, scrape, sdk, wait_until
from tests.integration.conftest import sample as value

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = "/v1/chat/completions"


def unique(text: str = "hello") -> list[dict[str, str]]:
    return [{"role": "user", "content": f"{text} {uuid.uuid4().hex}"}]


def create(client: openai.OpenAI, model: str = "gpt-4o-mini", **kwargs: Any) -> tuple[httpx.Headers, Any]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=kwargs.pop("messages", unique()), **kwargs
    )
    return raw.headers, raw.parse()


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


class Private:
    """A gateway of its own: a private redis-server, the session's fake upstream, and processes
    started here and stopped with it."""

    def __init__(self, base: DevStack, **env: str) -> None:
        self.base = base
        self.redis = RedisServer().start()
        self.env = {**base.env, "REDIS_URL": self.redis.url, **env}
        self.processes: list[subprocess.Popen[bytes]] = []

    def worker(self, metrics_port: int = 0, **env: str) -> subprocess.Popen[bytes]:
        args = ["worker", "--provider", "openai", "--metrics-port", str(metrics_port)]
        proc = self.base.spawn("worker-openai", args, {**self.env, **env})
        self.processes.append(proc)
        return proc

    def front(self, **env: str) -> Front:
        front = self.base.start_front({**self.env, **env}, wait_path="/health/ready")
        self.processes.append(front.process)
        return front

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url)

    def stop(self) -> None:
        stop_processes(self.processes)
        self.redis.stop()


@pytest.fixture
def private(stack: DevStack) -> Iterator[Callable[..., Private]]:
    made: list[Private] = []

    def make(**env: str) -> Private:
        made.append(Private(stack, **env))
        return made[-1]

    try:
        yield make
    finally:
        for p in made:
            p.stop()


def post(front: Front, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{front.url}{CHAT}", json=body, headers={**AUTH, **headers}, timeout=30)


def planted(text: str) -> bytes:
    """A chat.completion nobody's upstream wrote: served only from the cache."""
    return msgspec.json.encode(
        {
            "id": "chatcmpl-planted",
            "object": "chat.completion",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


# ---- 1. ENABLE_L2_CACHE=false ---------------------------------------------------------------


def test_l2_disabled_is_never_read_nor_written(private: Callable[..., Private]) -> None:
    gw = private(ENABLE_L2_CACHE="false")
    gw.worker()
    a, b = gw.front(), gw.front()
    messages = unique()
    h1, _ = create(sdk(a), messages=messages)
    h2, _ = create(sdk(a), messages=messages)
    h3, _ = create(sdk(b), messages=messages)
    assert (h1["x-edge-cache"], h2["x-edge-cache"], h3["x-edge-cache"]) == ("miss", "hit-l1", "miss")
    r = gw.client()
    assert list(r.scan_iter(keyspace.cache_entry("*"))) == []  # the worker wrote no L2 entry

    # Not read either: an entry already in Redis (say, from a gateway with L2 on) is ignored.
    body = {"model": "gpt-4o-mini", "messages": unique()}
    r.set(keyspace.cache_entry(chat_cache_key(body, MASTER_NAMESPACE)), planted("from L2"))
    answer = post(b, body)
    assert answer.headers["x-edge-cache"] == "miss" and answer.json()["id"] != "chatcmpl-planted"


# ---- 3. what the cache key ignores -----------------------------------------------------------


def test_the_cache_key_ignores_metadata_store_user_and_stream_options(client: openai.OpenAI) -> None:
    messages = unique()
    h, first = create(client, messages=messages, metadata={"team": "a"}, store=True, user="alice")
    assert h["x-edge-cache"] == "miss"
    h, second = create(client, messages=messages, metadata={"team": "b"}, store=False, user="bob")
    assert h["x-edge-cache"] == "hit-l1" and second.id == first.id
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,
        stream=True,
        stream_options={"include_usage": True},
        metadata={"team": "c"},
    )
    chunks = list(raw.parse())
    assert raw.headers["x-edge-cache"] == "hit-l1" and chunks[0].id == first.id
    h, _ = create(client, messages=messages, temperature=0.5)
    assert h["x-edge-cache"] == "miss"  # a field that can change the answer is part of the key
    h, _ = create(client, messages=messages, metadata={"team": "a"}, top_p=0.5)
    assert h["x-edge-cache"] == "miss"


# ---- 4. context-window fallback ---------------------------------------------------------------

CONTEXT_CONFIG = """
model_list:
  - {{model_name: gpt-small, provider: openai, model: small-{tag}}}
  - {{model_name: gpt-big, provider: openai, model: big-{tag}}}
  - {{model_name: gpt-other, provider: openai, model: other-{tag}}}
router_settings:
  fallbacks: {{gpt-small: [gpt-other]}}
  context_window_fallbacks: {{gpt-small: [gpt-big]}}
  retry: {{max_attempts: 3, initial_backoff_ms: 10}}
"""


def test_a_prompt_too_long_is_answered_by_the_context_window_fallback(
    stack: DevStack, private: Callable[..., Private], tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    config = tmp_path / "models.yaml"
    config.write_text(CONTEXT_CONFIG.format(tag=tag))
    gw = private(EDGE_CONFIG=str(config))
    gw.worker()
    front = gw.front()
    before = scrape(f"{front.url}/metrics")

    def calls() -> tuple[int, int, int]:
        seen = httpx.get(f"{stack.upstream_url}/_fake/stats").json()["by_model"]
        return tuple(seen.get(f"{name}-{tag}", 0) for name in ("small", "big", "other"))  # type: ignore[return-value]

    too_long = "[[fake:status=400]] [[fake:error_code=context_length_exceeded]] [[fake:times=1]]"
    headers, completion = create(sdk(front), "gpt-small", messages=unique(too_long))
    assert completion.choices[0].message.content
    assert (headers["x-edge-provider"], headers["x-edge-model"], headers["x-edge-attempts"]) == (
        "openai",
        f"big-{tag}",
        "2",
    )
    assert calls() == (1, 1, 0)  # straight to the context group, not to the ordinary fallbacks
    assert moved(before, scrape(f"{front.url}/metrics"), "llm_edge_fallbacks_total", model="gpt-small") == 1

    # Any other 400 is the client's fault: no retry, no fallback of either kind.
    with pytest.raises(openai.BadRequestError):
        create(sdk(front), "gpt-small", messages=unique("[[fake:status=400]] [[fake:times=1]]"))
    assert calls() == (2, 1, 0)


# ---- 6. the HTTP edges of the chat endpoint --------------------------------------------------


def test_get_on_the_chat_path_is_405_with_allow(front: Front) -> None:
    for path in (CHAT, "/chat/completions"):
        r = httpx.get(f"{front.url}{path}", headers=AUTH)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        error = r.json()["error"]
        assert error["message"] and error["type"]


def test_x_api_key_and_the_path_without_v1(front: Front) -> None:
    body = {"model": "gpt-4o-mini", "messages": unique()}
    r = httpx.post(f"{front.url}{CHAT}", json=body, headers={"x-api-key": MASTER_KEY}, timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    r = httpx.post(f"{front.url}{CHAT}", json=body, headers={"x-api-key": "sk-wrong"}, timeout=30)
    assert r.status_code == 401
    r = httpx.post(f"{front.url}/chat/completions", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.headers["x-edge-cache"] == "hit-l1"  # the same endpoint
    completion = openai.OpenAI(base_url=front.url, api_key=MASTER_KEY, max_retries=0).chat.completions.create(
        model="gpt-4o-mini", messages=unique()
    )
    assert completion.choices[0].message.content


@pytest.mark.parametrize("given", ["0", "-1", "abc", "inf", "nan", "-inf", ""])
def test_an_invalid_x_edge_timeout_is_400_naming_the_header(client: openai.OpenAI, given: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=unique(), extra_headers={"x-edge-timeout": given}
        )
    assert caught.value.body["param"] == "x-edge-timeout"
    assert caught.value.body["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def lonely(stack: DevStack) -> Iterator[Front]:
    """A front whose Redis has no worker at all, with a 1 KiB body limit."""
    empty = RedisServer().start()
    env = {**stack.env, "REDIS_URL": empty.url, "EDGE_MAX_BODY_BYTES": "1024"}
    front = stack.start_front(env, wait_path="/health/live")
    try:
        yield front
    finally:
        front.process.terminate()
        front.process.wait(10)
        empty.stop()


def chunked_body(total: int) -> Iterator[bytes]:
    """A JSON chat request of about `total` bytes, sent in pieces: no content-length."""
    head = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
    tail = b'"}]}'
    yield head
    filler = total - len(head) - len(tail)
    for _ in range(filler // 100):
        yield b"x" * 100
    yield b"x" * (filler % 100)
    yield tail


def test_a_chunked_body_over_the_limit_is_413(lonely: Front) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    r = httpx.post(f"{lonely.url}{CHAT}", content=chunked_body(1500), headers=headers)
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "request_too_large" and error["message"] and error["type"]
    # Under the limit, the same kind of body gets past the reader (and finds no worker).
    r = httpx.post(f"{lonely.url}{CHAT}", content=chunked_body(900), headers=headers, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_worker"


def test_ready_is_503_when_no_worker_is_alive(lonely: Front) -> None:
    assert httpx.get(f"{lonely.url}/health/live").status_code == 200
    r = httpx.get(f"{lonely.url}/health/ready")
    assert r.status_code == 503 and r.json()["error"]["message"]
    detail = httpx.get(f"{lonely.url}/health")
    assert detail.status_code == 503 and detail.json()["status"] == "degraded"
    assert detail.json()["redis"]["status"] == "ok"  # Redis is fine: it is the workers that are missing


# ---- 7. the front's metrics, sample by sample ------------------------------------------------


def test_front_metrics_move_by_label(front: Front, client: openai.OpenAI) -> None:
    model = f"gpt-metrics-{uuid.uuid4().hex[:6]}"  # its own label values: nothing else moves them
    labels = {"provider": "openai", "model": model}
    before = scrape(f"{front.url}/metrics")
    messages = unique()
    _, whole = create(client, model, messages=messages)  # miss
    create(client, model, messages=messages)  # L1 hit
    chunks = list(
        client.chat.completions.create(
            model=model, messages=unique(), stream=True, stream_options={"include_usage": True}
        )
    )  # streamed miss
    with pytest.raises(openai.BadRequestError):
        create(client, model, messages=unique("[[fake:status=400]]"))  # upstream 400
    after = scrape(f"{front.url}/metrics")

    def delta(name: str, **lbl: str) -> float:
        return moved(before, after, name, **lbl)

    assert delta("llm_edge_requests_total", **labels, status="200") == 3
    assert delta("llm_edge_requests_total", **labels, status="400") == 1
    assert delta("llm_edge_cache_hits_total", tier="l1") == 1
    assert delta("llm_edge_cache_misses_total", tier="l1") == 3
    assert delta("llm_edge_cache_misses_total", tier="l2") == 3
    assert delta("llm_edge_request_duration_ms_count", **labels, cache="miss") == 3
    assert delta("llm_edge_request_duration_ms_count", **labels, cache="hit-l1") == 1
    streamed = chunks[-1].usage
    assert streamed is not None
    assert delta("llm_edge_tokens_total", **labels, type="prompt") == (
        whole.usage.prompt_tokens + streamed.prompt_tokens
    )
    assert delta("llm_edge_tokens_total", **labels, type="completion") == (
        whole.usage.completion_tokens + streamed.completion_tokens
    )
    assert delta("llm_edge_streams_total", source="upstream") == 1
    assert delta("llm_edge_attempts_total", provider="openai", outcome="ok") == 2
    assert delta("llm_edge_attempts_total", provider="openai", outcome="400") == 1
    assert value(after, "llm_edge_active_requests") == 0
    assert value(after, "llm_edge_provider_available", provider="openai") == 1
    assert value(after, "llm_edge_live_workers", provider="openai") >= 1  # the alerts' "no live worker"
    assert ("llm_edge_queue_depth", frozenset({("provider", "openai")})) in after


def test_a_replayed_stream_and_a_client_disconnect_are_counted(front: Front, client: openai.OpenAI) -> None:
    messages = unique()
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    before = scrape(f"{front.url}/metrics")
    list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    body = {"model": "gpt-4o-mini", "messages": unique("[[fake:chunk_delay_ms=50]] [[fake:words=200]]")}
    with httpx.stream("POST", f"{front.url}{CHAT}", json={**body, "stream": True}, headers=AUTH) as r:
        lines = r.iter_lines()
        for _ in range(3):
            next(lines)
    metrics_url = f"{front.url}/metrics"
    wait_until(
        lambda: moved(before, scrape(metrics_url), "llm_edge_client_disconnects_total") == 1,
        "the disconnect was counted",
    )
    after = scrape(metrics_url)
    assert moved(before, after, "llm_edge_streams_total", source="hit-l1") == 1
    assert moved(before, after, "llm_edge_streams_total", source="upstream") == 1


# ---- a gateway of its own: Redis behind a proxy that can stall L2 reads, two workers -----------


class StallingRedisProxy:
    """A TCP proxy to Redis for the front. While `stall` is set, a connection that asks for an
    L2 entry (GET edge:l2:...) gets no answer, ever: a Redis too slow for that read, while the
    queue, the reply stream and everything else the front does keep working."""

    def __init__(self, target: RedisServer) -> None:
        self.target = ("127.0.0.1", target.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stall = threading.Event()
        self.stalled = 0
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_front: bool) -> None:
        held = False
        try:
            while data := src.recv(65536):
                if from_front and not held and self.stall.is_set():
                    if b"\r\nGET\r\n" in data and keyspace.cache_entry("").encode() in data:
                        held = True
                        self.stalled += 1
                if not held:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self.listener.close()
        for s in self._sockets:
            s.close()


class Own:
    def __init__(self, gw: Private, proxy: StallingRedisProxy, front: Front, workers: dict[int, int]) -> None:
        self.gw = gw
        self.proxy = proxy
        self.front = front
        self.workers = workers  # pid -> metrics port

    def worker_metrics(self) -> list[Samples]:
        return [scrape(f"http://127.0.0.1:{port}/metrics") for port in self.workers.values()]


@pytest.fixture(scope="module")
def own(stack: DevStack) -> Iterator[Own]:
    gw = Private(stack)
    proxy = StallingRedisProxy(gw.redis)
    try:
        workers = {}
        for _ in range(2):
            port = free_port()
            proc = gw.worker(metrics_port=port)
            wait_http(f"http://127.0.0.1:{port}/metrics", watch=[proc])
            workers[proc.pid] = port
        # L2 in a Redis of its own (here the same server, through the proxy): with L2 in the queue's
        # Redis, a miss reads it in the enqueue's own script, so it cannot stall apart from it.
        front = gw.front(CACHE_REDIS_URL=proxy.url)
        r = gw.client()
        wait_until(lambda: r.zcard(keyspace.workers("openai")) == 2, "both workers registered")
        yield Own(gw, proxy, front, workers)
    finally:
        gw.stop()
        proxy.stop()


# ---- 2. a slow cache Redis is an L2 miss ------------------------------------------------------


def test_a_stalled_l2_read_is_a_miss_and_the_request_is_still_answered(own: Own) -> None:
    r = own.gw.client()
    stalled_body = {"model": "gpt-4o-mini", "messages": unique()}
    served_body = {"model": "gpt-4o-mini", "messages": unique()}
    for body in (stalled_body, served_body):
        r.set(keyspace.cache_entry(chat_cache_key(body, MASTER_NAMESPACE)), planted("from L2"))
    before = scrape(f"{own.front.url}/metrics")

    own.proxy.stall.set()
    try:
        answer = post(own.front, stalled_body)
    finally:
        own.proxy.stall.clear()
    assert own.proxy.stalled >= 1  # the L2 read really went unanswered
    assert answer.status_code == 200 and answer.headers["x-edge-cache"] == "miss"
    assert answer.json()["id"] != "chatcmpl-planted"  # answered by the upstream, through the queue
    after = scrape(f"{own.front.url}/metrics")
    assert moved(before, after, "llm_edge_cache_errors_total") >= 1

    # The control: with Redis answering, the same kind of entry is an L2 hit.
    answer = post(own.front, served_body)
    assert answer.headers["x-edge-cache"] == "hit-l2" and answer.json()["id"] == "chatcmpl-planted"


# ---- 7b. the workers' metrics ----------------------------------------------------------------


def test_worker_metrics_move_by_label(own: Own) -> None:
    model = f"gpt-wmetrics-{uuid.uuid4().hex[:6]}"

    def total(samples: list[Samples], name: str, **labels: str) -> float:
        return sum(value(s, name, **labels) for s in samples)

    before = own.worker_metrics()
    create(sdk(own.front), model)
    with pytest.raises(openai.BadRequestError):
        create(sdk(own.front), model, messages=unique("[[fake:status=400]]"))
    expected = {
        ("llm_edge_worker_jobs_total", (("provider", "openai"), ("status", "200"))): 1,
        ("llm_edge_worker_jobs_total", (("provider", "openai"), ("status", "400"))): 1,
        ("llm_edge_queue_wait_ms_count", (("provider", "openai"),)): 2,
        ("llm_edge_upstream_duration_ms_count", (("provider", "openai"),)): 2,
    }

    def all_moved() -> bool:
        now = own.worker_metrics()
        return all(
            total(now, name, **dict(lbl)) - total(before, name, **dict(lbl)) == n
            for (name, lbl), n in expected.items()
        )

    wait_until(all_moved, "the workers counted both jobs")  # counted just after the answer went out
    # Tokens are counted once, by the front: the workers have no counter of their own.
    assert not any(name == "llm_edge_upstream_tokens_total" for s in own.worker_metrics() for name, _ in s)


# ---- 5. a worker dying mid-stream -------------------------------------------------------------


def test_a_worker_killed_mid_stream_ends_the_stream_with_an_error_event(stack: DevStack, own: Own) -> None:
    model = f"gpt-crash-{uuid.uuid4().hex[:6]}"
    r = own.gw.client()
    client = sdk(own.front, timeout=60)
    stream = client.chat.completions.create(
        model=model, messages=unique("[[fake:chunk_delay_ms=50]] [[fake:words=100]]"), stream=True
    )
    chunks = iter(stream)
    received = [next(chunks) for _ in range(3)]

    holders = [k for k in r.scan_iter(keyspace.running("*")) if r.scard(k)]
    assert len(holders) == 1
    worker_id = holders[0].decode().removeprefix(keyspace.running(""))
    pid = int(worker_id.rsplit("-", 2)[1])
    assert pid in own.workers
    os.kill(pid, signal.SIGKILL)

    with pytest.raises(openai.APIError) as caught:
        for chunk in chunks:
            received.append(chunk)
    assert "stream" in str(caught.value.message)
    starts = [c for c in received if c.choices and c.choices[0].delta.role]
    assert len(starts) == 1  # never started over
    assert not any(c.choices and c.choices[0].finish_reason for c in received)
    assert httpx.get(f"{stack.upstream_url}/_fake/stats").json()["by_model"][model] == 1  # not re-run
