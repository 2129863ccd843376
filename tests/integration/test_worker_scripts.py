"""The workers' Lua scripts against a real redis-server: the batched claim and the reaping of a
dead worker's jobs (what crash recovery rests on)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis
from arq.constants import in_progress_key_prefix, job_key_prefix

from edge_agent.redis_server import RedisServer
from edge_workers.recovery import _REAP_LUA
from edge_workers.worker import _CLAIM_LUA
from shared import keyspace

LEASE_MS = 60_000


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    srv = RedisServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


def claim(r: redis.Redis, worker: str, now_ms: int, ids: list[str]) -> list[tuple[str, float]]:
    script = r.register_script(_CLAIM_LUA)
    out = script(
        keys=[keyspace.queue("openai"), in_progress_key_prefix, keyspace.running(worker)],
        args=[now_ms, LEASE_MS, *ids],
    )
    return [(out[i].decode(), float(out[i + 1])) for i in range(0, len(out), 2)]


def reap(r: redis.Redis, dead: str, now_ms: int) -> list[str]:
    script = r.register_script(_REAP_LUA)
    out = script(
        keys=[keyspace.workers("openai"), keyspace.queue("openai"), keyspace.wake("openai")],
        args=[dead, now_ms, keyspace.running(dead), job_key_prefix, in_progress_key_prefix],
    )
    return sorted(i.decode() for i in out)


def members(r: redis.Redis, key: str) -> set[str]:
    return {m.decode() for m in r.smembers(key)}


# ---- claim ------------------------------------------------------------------------------------


def test_claim_takes_only_due_jobs_not_already_in_progress(r: redis.Redis) -> None:
    queue = keyspace.queue("openai")
    r.zadd(queue, {"due": 1_000, "busy": 1_500, "later": 5_000})
    r.set(in_progress_key_prefix + "busy", b"1", px=LEASE_MS)  # another worker runs it

    got = claim(r, "w1", 2_000, ["due", "busy", "later", "gone"])

    assert got == [("due", 1_000.0)]  # the id with its score (the enqueue time arq reports)
    assert members(r, keyspace.running("w1")) == {"due"}
    assert 0 < r.pttl(in_progress_key_prefix + "due") <= LEASE_MS
    assert not r.exists(in_progress_key_prefix + "later")
    assert not r.exists(in_progress_key_prefix + "gone")
    assert r.zcard(queue) == 3  # claiming leaves the queue to arq's run_job


def test_a_claimed_job_is_never_claimed_twice(r: redis.Redis) -> None:
    r.zadd(keyspace.queue("openai"), {"j": 1_000})
    assert claim(r, "w1", 2_000, ["j"]) == [("j", 1_000.0)]
    assert claim(r, "w2", 2_000, ["j"]) == []
    assert members(r, keyspace.running("w2")) == set()
    assert members(r, keyspace.running("w1")) == {"j"}


def test_claim_returns_every_due_id_with_its_score_in_order(r: redis.Redis) -> None:
    r.zadd(keyspace.queue("openai"), {"a": 10, "b": 20, "c": 30})
    assert claim(r, "w1", 25, ["b", "c", "a"]) == [("b", 20.0), ("a", 10.0)]
    assert members(r, keyspace.running("w1")) == {"a", "b"}


# ---- reap -------------------------------------------------------------------------------------


def _dead_worker_holding(r: redis.Redis, dead: str, live: str) -> None:
    r.zadd(keyspace.workers("openai"), {dead: 1_000, live: 9_000})
    r.sadd(keyspace.running(dead), "j1", "j2", "answered")
    for job in ("j1", "j2"):
        r.set(job_key_prefix + job, b"payload")
    for job in ("j1", "j2", "answered"):
        r.set(in_progress_key_prefix + job, b"1", px=LEASE_MS)
    # "answered": its job key is gone (the front gave up or it was answered): not re-run.


def test_reap_requeues_only_jobs_that_still_exist_and_wakes_workers(r: redis.Redis) -> None:
    dead, live = f"dead-{uuid.uuid4().hex[:6]}", "live"
    _dead_worker_holding(r, dead, live)

    assert reap(r, dead, 10_000) == ["j1", "j2"]

    queue = keyspace.queue("openai")
    assert {m.decode(): s for m, s in r.zrange(queue, 0, -1, withscores=True)} == {
        "j1": 10_000.0,
        "j2": 10_000.0,
    }
    assert not r.exists(in_progress_key_prefix + "j1") and not r.exists(in_progress_key_prefix + "j2")
    assert not r.exists(keyspace.running(dead))
    assert [m.decode() for m in r.zrange(keyspace.workers("openai"), 0, -1)] == [live]
    woke = sorted(fields[b"j"].decode() for _, fields in r.xrange(keyspace.wake("openai")))
    assert woke == ["j1", "j2"]
    assert r.exists(job_key_prefix + "j1")  # the job itself is untouched: it runs again as it was


def test_reaping_twice_or_racing_reapers_requeue_once(server: RedisServer, r: redis.Redis) -> None:
    dead = "dead-race"
    _dead_worker_holding(r, dead, "live")
    results: list[list[str]] = []
    barrier = threading.Barrier(2)

    def reaper() -> None:
        client = redis.Redis.from_url(server.url)
        barrier.wait()
        results.append(reap(client, dead, 10_000))
        client.close()

    threads = [threading.Thread(target=reaper) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [[], ["j1", "j2"]]
    assert reap(r, dead, 20_000) == []
    assert r.xlen(keyspace.wake("openai")) == 2
    assert r.zscore(keyspace.queue("openai"), "j1") == 10_000.0  # not pushed back by a late reaper


def test_reaping_a_worker_that_is_not_registered_touches_nothing(r: redis.Redis) -> None:
    # It re-registered (heartbeat) or another reaper already removed it.
    r.sadd(keyspace.running("ghost"), "j1")
    r.set(job_key_prefix + "j1", b"payload")
    r.set(in_progress_key_prefix + "j1", b"1", px=LEASE_MS)
    assert reap(r, "ghost", 10_000) == []
    assert r.exists(in_progress_key_prefix + "j1") and members(r, keyspace.running("ghost")) == {"j1"}
    assert r.zcard(keyspace.queue("openai")) == 0 and r.xlen(keyspace.wake("openai")) == 0
