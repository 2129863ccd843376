"""Failure paths with real processes: broken and hostile upstreams, dead workers, saturation,
and what the gateway leaves in Redis. Each test that kills or starves a worker has a private
stack, so no other test sees its damage."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_front.keys import MASTER_NAMESPACE
from shared import keyspace
from shared.cache_keys import chat_cache_key
from tests.integration.conftest import wait_until

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def sdk(front: Front, timeout: float = 30, key: str = MASTER_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.url}/v1", api_key=key, max_retries=0, timeout=timeout)


def text(marker: str = "") -> str:
    return f"{marker} {uuid.uuid4().hex}"


def calls(stack: DevStack, model: str) -> int:
    return int(httpx.get(f"{stack.upstream_url}/_fake/stats").json()["by_model"].get(model, 0))


def private_stack(tmp: Path, **env: str) -> DevStack:
    overrides = {"EDGE_MAX_ATTEMPTS": "1", "EDGE_BREAKER_FAILURES": "1000000", **env}
    dev = DevStack(env_overrides=overrides, log_dir=tmp)
    dev.start_redis()
    dev.start_upstream()
    return dev


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevStack, Front, redis.Redis]]:
    """One openai worker and one front on a Redis of their own (its keys are inspected)."""
    dev = private_stack(tmp_path_factory.mktemp("failure-logs"))
    try:
        dev.worker = dev.start_worker("openai")  # type: ignore[attr-defined]
        front = dev.start_front(wait_path="/health/ready")
        assert dev.redis is not None
        r = redis.Redis.from_url(dev.redis.url)
        yield dev, front, r
        r.close()
    finally:
        dev.stop()


# ---- answers that are not answers ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["error_200", "no_finish", "not_json"])
def test_a_2xx_that_is_not_a_chat_completion_is_a_502_and_never_cached(quiet, bad: str) -> None:
    stack, front, r = quiet
    model = f"gpt-bad-{uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": text(f"[[fake:bad_body={bad}]]")}]
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            sdk(front).chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
        assert caught.value.status_code == 502
        assert caught.value.response.headers["x-edge-cache"] == "miss"  # nothing was cached
        assert "2xx" in caught.value.body["message"]  # type: ignore[index]
    # The same prompt streamed: the same 502 in the envelope, not a replay of a poisoned entry.
    with pytest.raises(openai.InternalServerError) as caught:
        list(sdk(front).chat.completions.create(model=model, messages=messages, stream=True))  # type: ignore[arg-type]
    assert caught.value.status_code == 502
    assert caught.value.response.headers["content-type"].startswith("application/json")
    assert calls(stack, model) == 3
    key = chat_cache_key({"model": model, "messages": messages}, MASTER_NAMESPACE)
    assert not r.exists(keyspace.cache_entry(key))


def test_an_unreadable_cache_entry_is_a_miss_and_is_replaced(quiet) -> None:
    stack, front, r = quiet
    model = f"gpt-poisoned-{uuid.uuid4().hex[:8]}"
    messages = [{"role": "user", "content": text()}]
    entry = keyspace.cache_entry(chat_cache_key({"model": model, "messages": messages}, MASTER_NAMESPACE))
    poison = b'{"error": {"message": "written by an older gateway"}}'
    r.set(entry, poison, ex=60)
    raw = sdk(front).chat.completions.with_raw_response.create(
        model=model,
        messages=messages,  # type: ignore[arg-type]
        stream=True,
    )
    assert raw.http_response.headers["x-edge-cache"] == "miss"
    chunks = list(raw.parse())
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert calls(stack, model) == 1
    wait_until(lambda: r.get(entry) not in (None, poison), "the worker's good answer in L2")
    # The good answer is what the next client gets, streamed or not.
    again = sdk(front).chat.completions.with_raw_response.create(model=model, messages=messages)  # type: ignore[arg-type]
    assert again.headers["x-edge-cache"].startswith("hit")
    assert again.parse().choices[0].finish_reason == "stop"


# ---- hostile upstreams -------------------------------------------------------------------------------


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_a_200_mb_answer_or_a_stream_without_newlines_fails_the_job_not_the_worker(quiet) -> None:
    stack, front, _ = quiet
    client = sdk(front)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": text("[[fake:huge_body_mb=200]]")}],
        )
    assert caught.value.status_code == 502 and "limit" in caught.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.InternalServerError) as caught:
        list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": text("[[fake:sse_no_newlines_mb=40]]")}],
                stream=True,
            )
        )
    assert caught.value.status_code == 502 and "limit" in caught.value.body["message"]  # type: ignore[index]
    # The worker is alive and well: it answers the next request, and never held the 200 MB.
    worker = stack.worker  # type: ignore[attr-defined]
    assert worker.poll() is None
    answer = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text()}]
    )
    assert answer.choices[0].message.content
    assert peak_rss_mb(worker.pid) < 190  # the default 64 MiB cap, not the 200 MB answer


def test_upstream_refusing_the_gateway_s_key_is_a_502_naming_the_deployment(quiet) -> None:
    _, front, _ = quiet
    with pytest.raises(openai.InternalServerError) as caught:  # not AuthenticationError: not the client's key
        sdk(front).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text("[[fake:status=401]]")}]
        )
    assert caught.value.status_code == 502
    message = caught.value.body["message"]  # type: ignore[index]
    assert "refused the gateway's credentials" in message and "gpt-4o-mini" not in message.split("'")[0]
    assert caught.value.body["code"] == "upstream_credentials_refused"  # type: ignore[index]


def test_a_deployment_whose_key_is_refused_fails_over_to_the_next(tmp_path: Path) -> None:
    dev = private_stack(tmp_path)
    try:
        refusing = dev.spawn_upstream("--require-key", "sk-other-key")
        config = tmp_path / "models.yaml"
        config.write_text(
            "model_list:\n"
            f"  - {{model_name: gpt-x, provider: openai, model: first, base_url: {refusing}/v1}}\n"
            f"  - {{model_name: gpt-x, provider: openai, model: second, base_url: {dev.upstream_url}/v1}}\n"
        )
        env = {**dev.env, "EDGE_CONFIG": str(config), "EDGE_MAX_ATTEMPTS": "3"}
        dev.start_worker("openai", env)
        front = dev.start_front(env, wait_path="/health/ready")
        raw = sdk(front).chat.completions.with_raw_response.create(
            model="gpt-x", messages=[{"role": "user", "content": text()}]
        )
        assert raw.headers["x-edge-model"] == "second" and raw.headers["x-edge-attempts"] == "2"
    finally:
        dev.stop()


# ---- nobody waits for the deadline -----------------------------------------------------------------


def test_requests_whose_provider_lost_its_last_worker_end_with_503_after_the_grace(tmp_path: Path) -> None:
    dev = private_stack(
        tmp_path, EDGE_NO_WORKER_GRACE="1", EDGE_WORKER_CONCURRENCY="2", EDGE_REQUEST_TIMEOUT="120"
    )
    try:
        worker = dev.start_worker("openai")
        front = dev.start_front(wait_path="/health/ready")
        assert dev.redis is not None
        r = redis.Redis.from_url(dev.redis.url)
        outcomes: dict[str, Any] = {}
        # The whole answers come from a virtual key with a parallel limit: its slots must come back.
        created = httpx.post(f"{front.url}/key/generate", headers=AUTH, json={"max_parallel_requests": 5})
        tenant, tenant_id = created.json()["key"], created.json()["key_id"]

        def whole(name: str, marker: str) -> None:
            try:
                sdk(front, timeout=60, key=tenant).chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": text(marker)}]
                )
                outcomes[name] = 200
            except openai.APIStatusError as e:
                outcomes[name] = (e.status_code, e.body["code"], e.response.headers.get("retry-after"))  # type: ignore[index]

        def streamed() -> None:
            stream = sdk(front, timeout=60).chat.completions.create(
                model="gpt-4o-mini",
                messages=[
                    {"role": "user", "content": text("[[fake:chunk_delay_ms=400]] [[fake:words=300]]")}
                ],
                stream=True,
            )
            got = 0
            try:
                for _ in stream:
                    got += 1
                    outcomes["stream_started"] = True
                outcomes["stream"] = "completed"
            except openai.APIError as e:
                outcomes["stream"] = ("error", got, e.message)

        threads = [
            threading.Thread(target=streamed),
            threading.Thread(target=whole, args=("running", "[[fake:delay_ms=60000]]")),
        ]
        for t in threads:
            t.start()
        wait_until(lambda: outcomes.get("stream_started"), "the stream's first chunk")
        wait_until(lambda: r.zcard(keyspace.queue("openai")) == 2, "both jobs running")
        queued = threading.Thread(target=whole, args=("queued", ""))
        queued.start()
        threads.append(queued)
        wait_until(lambda: r.zcard(keyspace.queue("openai")) == 3, "a third job waiting")
        os.kill(worker.pid, signal.SIGKILL)
        for t in threads:
            t.join(60)
        no_worker = (503, "no_worker", "5")
        assert outcomes["running"] == no_worker and outcomes["queued"] == no_worker
        kind, got, message = outcomes["stream"]
        assert kind == "error" and got >= 1 and "No worker" in message
        # Their jobs are gone: a worker that starts later does not run them for nobody.
        wait_until(lambda: r.zcard(keyspace.queue("openai")) == 0, "the dropped jobs gone from the queue")
        # ...and the key's parallel slots are free now, not at the jobs' deadlines.
        wait_until(lambda: r.zcard(keyspace.key_parallel(tenant_id)) == 0, "the key's slots released")
        r.close()
    finally:
        dev.stop()


def test_a_saturated_worker_starts_a_queued_job_when_a_slot_frees_not_at_its_poll(tmp_path: Path) -> None:
    # arq's fallback poll is set to a minute: only the wake path can start the queued job in time.
    dev = private_stack(tmp_path, EDGE_WORKER_CONCURRENCY="1", EDGE_WORKER_POLL_INTERVAL="60")
    try:
        dev.start_worker("openai")
        front = dev.start_front(wait_path="/health/ready")
        done: list[str] = []

        def ask(marker: str) -> None:
            answer = sdk(front, timeout=20).chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text(marker)}]
            )
            done.append(answer.choices[0].finish_reason)

        busy = threading.Thread(target=ask, args=("[[fake:delay_ms=700]]",))
        busy.start()
        assert dev.redis is not None
        r = redis.Redis.from_url(dev.redis.url)
        wait_until(lambda: sum(int(v) for v in r.hvals(keyspace.load("openai"))) == 1, "the only slot busy")
        ask("")  # woken while saturated: it must not wait for the minute-long poll (client: 20 s)
        busy.join()
        assert done == ["stop", "stop"]
        r.close()
    finally:
        dev.stop()


# ---- what stays in Redis ------------------------------------------------------------------------------


def keys_without_expiry(r: redis.Redis) -> dict[str, int]:
    """Every key without a TTL, with its size (members, entries, or 1)."""
    sizes = {}
    for raw_key in r.scan_iter(count=1000):
        if r.ttl(raw_key) != -1:
            continue
        key = raw_key.decode()
        kind = r.type(raw_key).decode()
        size = {"zset": r.zcard, "set": r.scard, "hash": r.hlen, "stream": r.xlen, "list": r.llen}.get(kind)
        sizes[key] = size(raw_key) if size else 1
    return sizes


def test_traffic_of_every_kind_leaves_no_growing_key_without_an_expiry(tmp_path: Path) -> None:
    dev = private_stack(tmp_path, EDGE_WORKER_CONCURRENCY="4", EDGE_NO_WORKER_GRACE="30")
    try:
        workers = [dev.start_worker("openai"), dev.start_worker("openai")]
        front = dev.start_front(wait_path="/health/ready")
        assert dev.redis is not None
        r = redis.Redis.from_url(dev.redis.url)
        client = sdk(front)

        def traffic() -> None:
            for marker in ("", "[[fake:status=500]]", "[[fake:status=400]]", "[[fake:bad_body=no_finish]]"):
                for stream in (False, True):
                    try:
                        result = client.chat.completions.create(
                            model="gpt-4o-mini",
                            messages=[{"role": "user", "content": text(marker)}],
                            stream=stream,
                        )
                        if stream:
                            list(result)  # type: ignore[arg-type]
                    except openai.APIStatusError:
                        pass
            # An expiry: the job's deadline passes while it waits behind busy slots.
            blockers = [
                threading.Thread(
                    target=lambda: client.chat.completions.create(
                        model="gpt-4o-mini",
                        messages=[{"role": "user", "content": text("[[fake:delay_ms=3000]]")}],
                    )
                )
                for _ in range(8)  # long enough that all eight are held at once on a loaded machine
            ]
            for t in blockers:
                t.start()
            wait_until(
                lambda: sum(int(v) for v in r.hvals(keyspace.load("openai"))) == 8,
                "every slot busy",
            )
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": text()}],
                    extra_headers={"x-edge-timeout": "0.3"},
                )
            for t in blockers:
                t.join()
            # A cancel: the client leaves a stream after its first chunk.
            with httpx.stream(
                "POST",
                f"{front.url}/v1/chat/completions",
                headers=AUTH,
                json={
                    "model": "gpt-4o-mini",
                    "stream": True,
                    "messages": [{"role": "user", "content": text("[[fake:chunk_delay_ms=100]]")}],
                },
            ) as response:
                next(response.iter_bytes())

        def settled() -> dict[str, int]:
            def idle() -> bool:
                return r.zcard(keyspace.queue("openai")) == 0 and not any(
                    int(v) for v in r.hvals(keyspace.load("openai"))
                )

            wait_until(idle, "the queue to empty")
            return keys_without_expiry(r)

        traffic()
        # A kill: a worker dies holding a job; the survivor takes it over; a new worker joins.
        slow = threading.Thread(
            target=lambda: client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text("[[fake:delay_ms=3000]]")}]
            )
        )
        slow.start()
        # Claimed, not just queued: its worker lists it as running.
        holder = wait_until(
            lambda: next((w for w in workers if r.scard(keyspace.running(_worker_id(r, w.pid)))), None),
            "the slow job held by a worker",
        )
        os.kill(holder.pid, signal.SIGKILL)
        slow.join()
        workers.remove(holder)
        dev.start_worker("openai")
        first = settled()
        traffic()
        second = settled()
        # Only fixed, bounded keys live without an expiry, and none grew with the second round.
        allowed = {
            keyspace.queue("openai"),
            keyspace.wake("openai"),
            keyspace.served("openai"),
            keyspace.epoch(),
            keyspace.outcomes("openai"),  # capped (XADD MAXLEN ~; test_job_outcomes.py checks it)
        }
        for key in second:
            assert key in allowed or key.startswith(keyspace.breaker("")), f"{key} has no expiry"
        assert set(second) <= set(first) | {keyspace.served("openai")}
        for key, size in second.items():
            if key not in (keyspace.served("openai"), keyspace.outcomes("openai")):
                assert size <= first.get(key, size), f"{key} grew: {first.get(key)} -> {size}"
        assert r.xlen(keyspace.wake("openai")) == 0  # claims delete what they read
        for reply_stream in r.scan_iter(match=keyspace.replies("*")):
            assert r.ttl(reply_stream) > 0
            wait_until(lambda: r.xlen(reply_stream) == 0, "the delivered replies trimmed")  # noqa: B023
        for running in r.scan_iter(match=keyspace.running("*")):
            assert r.scard(running) == 0 or r.ttl(running) > 0
        r.close()
    finally:
        dev.stop()


def _worker_id(r: redis.Redis, pid: int) -> str:
    for member in r.zrange(keyspace.workers("openai"), 0, -1):
        worker_id = member.decode()
        if f"-{pid}-" in worker_id:
            return worker_id
    raise AssertionError(f"worker {pid} is not registered")
