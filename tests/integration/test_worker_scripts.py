"""The workers' Lua scripts against a real redis-server: the batched claim and the reaping of a
dead worker's jobs (what crash recovery rests on)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from edge_agent.redis_server import RedisServer
from edge_workers.runner import Claimed
from shared import keyspace
from shared.arq_compat import (
    CLAIM_LUA,
    IN_PROGRESS_KEY_PREFIX,
    JOB_KEY_PREFIX,
    REAP_LUA,
    RETRY_KEY_PREFIX,
    RETRY_KEY_TTL_S,
    WORKER_STATE_TTL_S,
)
from shared.queue import WAKE_STREAM_MAXLEN

LEASE_MS = 60_000


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    client.flushall()
    try:
        yield client
    finally:
        client.close()


def claim(
    r: redis.Redis,
    worker: str,
    now_ms: int,
    ids: list[str],
    wake_entries: tuple[bytes, ...] = (),
    most: int = 100,
) -> list[tuple[str, float]]:
    script = r.register_script(CLAIM_LUA)
    out = script(
        keys=keyspace.claim_keys("openai", worker),
        args=[now_ms, LEASE_MS, WORKER_STATE_TTL_S, most, len(ids), "", *ids, *wake_entries],
    )
    return [(job.job_id, float(job.score)) for job in Claimed.from_claim(out)]


def reap(r: redis.Redis, dead: str, now_ms: int) -> list[str]:
    script = r.register_script(REAP_LUA)
    out = script(
        keys=[
            keyspace.workers("openai"),
            keyspace.queue("openai"),
            keyspace.wake("openai"),
            keyspace.load("openai"),
            keyspace.missing_keys("openai"),
            keyspace.idle("openai"),
        ],
        args=[
            dead,
            now_ms,
            keyspace.running(dead),
            JOB_KEY_PREFIX,
            IN_PROGRESS_KEY_PREFIX,
            WAKE_STREAM_MAXLEN,
        ],
    )
    return sorted(i.decode() for i in out)


def members(r: redis.Redis, key: str) -> set[str]:
    return {m.decode() for m in r.smembers(key)}


# ---- claim ------------------------------------------------------------------------------------


def test_claim_takes_only_due_jobs_not_already_in_progress(r: redis.Redis) -> None:
    queue = keyspace.queue("openai")
    r.zadd(queue, {"due": 1_000, "busy": 1_500, "later": 5_000})
    r.set(IN_PROGRESS_KEY_PREFIX + "busy", b"1", px=LEASE_MS)  # another worker runs it

    got = claim(r, "w1", 2_000, ["due", "busy", "later", "gone"])

    assert got == [("due", 1_000.0)]  # the id with its score (the enqueue time arq reports)
    assert members(r, keyspace.running("w1")) == {"due"}
    assert 0 < r.pttl(IN_PROGRESS_KEY_PREFIX + "due") <= LEASE_MS
    assert not r.exists(IN_PROGRESS_KEY_PREFIX + "later")
    assert not r.exists(IN_PROGRESS_KEY_PREFIX + "gone")
    assert r.zcard(queue) == 3  # claiming leaves the job in the queue until it is finished
    # The running set expires unless heartbeats keep it: nothing outlives a worker nobody reaps.
    assert 0 < r.ttl(keyspace.running("w1")) <= WORKER_STATE_TTL_S


def test_claim_returns_each_job_with_its_data_and_counted_try(r: redis.Redis) -> None:
    script = r.register_script(CLAIM_LUA)
    r.zadd(keyspace.queue("openai"), {"j": 1_000, "gone": 1_000})
    r.set(JOB_KEY_PREFIX + "j", b"payload")
    keys = keyspace.claim_keys("openai", "w1")
    out = script(keys=keys, args=[2_000, LEASE_MS, WORKER_STATE_TTL_S, 10, 2, "", "j", "gone"])
    first, gone = Claimed.from_claim(out)
    assert (first.job_id, first.data, first.job_try) == ("j", b"payload", 1)
    assert (gone.job_id, gone.data, gone.job_try) == ("gone", None, 1)  # its key expired: runner drops it
    assert 0 < r.ttl(RETRY_KEY_PREFIX + "j") <= RETRY_KEY_TTL_S
    r.delete(IN_PROGRESS_KEY_PREFIX + "j")  # its worker died; the reaper let it go
    args = [2_000, LEASE_MS, WORKER_STATE_TTL_S, 10, 1, "", "j"]
    (again,) = Claimed.from_claim(script(keys=keys, args=args))
    assert again.job_try == 2  # arq's count of runs, as its run_job would have made it


def test_a_claimed_job_is_never_claimed_twice(r: redis.Redis) -> None:
    r.zadd(keyspace.queue("openai"), {"j": 1_000})
    assert claim(r, "w1", 2_000, ["j"]) == [("j", 1_000.0)]
    assert claim(r, "w2", 2_000, ["j"]) == []
    assert members(r, keyspace.running("w2")) == set()
    assert members(r, keyspace.running("w1")) == {"j"}


def test_claim_deletes_the_wake_entries_it_was_given(r: redis.Redis) -> None:
    wake = keyspace.wake("openai")
    r.zadd(keyspace.queue("openai"), {"a": 10, "b": 20})
    read = [r.xadd(wake, {"j": job}) for job in ("a", "b", "gone")]
    later = r.xadd(wake, {"j": "not-read-yet"})
    assert claim(r, "w1", 25, ["a", "b", "gone"], tuple(read)) == [("a", 10.0), ("b", 20.0)]
    assert [entry_id for entry_id, _ in r.xrange(wake)] == [later]


def test_claim_takes_up_to_its_limit_past_jobs_that_run_elsewhere(r: redis.Redis) -> None:
    # arq keeps running jobs in its queue: a poll sees them first, and must look past them.
    r.zadd(keyspace.queue("openai"), {f"j{i}": i for i in range(1, 9)})
    for i in range(1, 5):
        r.set(IN_PROGRESS_KEY_PREFIX + f"j{i}", b"1", px=LEASE_MS)
    ids = [f"j{i}" for i in range(1, 9)]
    assert claim(r, "w1", 100, ids, most=3) == [("j5", 5.0), ("j6", 6.0), ("j7", 7.0)]
    assert claim(r, "w2", 100, ids, most=3) == [("j8", 8.0)]


def test_claim_returns_every_due_id_with_its_score_in_order(r: redis.Redis) -> None:
    r.zadd(keyspace.queue("openai"), {"a": 10, "b": 20, "c": 30})
    assert claim(r, "w1", 25, ["b", "c", "a"]) == [("b", 20.0), ("a", 10.0)]
    assert members(r, keyspace.running("w1")) == {"a", "b"}


# ---- reap -------------------------------------------------------------------------------------


def _dead_worker_holding(r: redis.Redis, dead: str, live: str) -> None:
    r.zadd(keyspace.workers("openai"), {dead: 1_000, live: 9_000})
    r.hset(keyspace.load("openai"), mapping={dead: 3, live: 1})
    r.sadd(keyspace.running(dead), "j1", "j2", "answered")
    for job in ("j1", "j2"):
        r.set(JOB_KEY_PREFIX + job, b"payload")
    for job in ("j1", "j2", "answered"):
        r.set(IN_PROGRESS_KEY_PREFIX + job, b"1", px=LEASE_MS)
    # "answered": its job key is gone (the front gave up or it was answered): not re-run.


def test_reap_requeues_only_jobs_that_still_exist_and_wakes_workers(r: redis.Redis) -> None:
    dead, live = f"dead-{uuid.uuid4().hex[:6]}", "live"
    _dead_worker_holding(r, dead, live)
    # Its ticket (edge_workers/handoff.py): the jobs handed to it are in its running set.
    r.zadd(keyspace.idle("openai"), {dead: 9_500, live: 9_600})

    assert reap(r, dead, 10_000) == ["j1", "j2"]
    assert [m.decode() for m in r.zrange(keyspace.idle("openai"), 0, -1)] == [live]

    queue = keyspace.queue("openai")
    assert {m.decode(): s for m, s in r.zrange(queue, 0, -1, withscores=True)} == {
        "j1": 10_000.0,
        "j2": 10_000.0,
    }
    assert not r.exists(IN_PROGRESS_KEY_PREFIX + "j1") and not r.exists(IN_PROGRESS_KEY_PREFIX + "j2")
    assert not r.exists(keyspace.running(dead))
    assert [m.decode() for m in r.zrange(keyspace.workers("openai"), 0, -1)] == [live]
    assert r.hgetall(keyspace.load("openai")) == {live.encode(): b"1"}  # its jobs no longer count as running
    woke = sorted(fields[b"j"].decode() for _, fields in r.xrange(keyspace.wake("openai")))
    assert woke == ["j1", "j2"]
    assert r.exists(JOB_KEY_PREFIX + "j1")  # the job itself is untouched: it runs again as it was


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
    r.set(JOB_KEY_PREFIX + "j1", b"payload")
    r.set(IN_PROGRESS_KEY_PREFIX + "j1", b"1", px=LEASE_MS)
    assert reap(r, "ghost", 10_000) == []
    assert r.exists(IN_PROGRESS_KEY_PREFIX + "j1") and members(r, keyspace.running("ghost")) == {"j1"}
    assert r.zcard(keyspace.queue("openai")) == 0 and r.xlen(keyspace.wake("openai")) == 0
