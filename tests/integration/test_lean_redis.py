"""shared/resp.py against a real redis-server: replies reach their own commands however many
callers share the connection, and every failure looks as redis-py's would (a lost connection,
a timeout, an error reply, READONLY, NOSCRIPT), with the next command on a new connection."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from edge_agent.redis_server import RedisServer
from shared.resp import LeanRedis, LeanScript, stream_entries


async def names_of_clients(r: Redis) -> list[str]:
    return [c.get("name", "") for c in await r.client_list()]


async def until_blocked(r: Redis, name: str) -> None:
    """Until the client named `name` waits in a blocking command (Redis lists it as blocked)."""
    for _ in range(500):
        if any(c.get("name") == name and "b" in c.get("flags", "") for c in await r.client_list()):
            return
        await asyncio.sleep(0.01)  # Redis's state, polled: there is no event to wait on
    raise AssertionError(f"{name} never blocked")


async def test_replies_reach_their_own_commands_however_many_callers_share_it(r: Redis) -> None:
    lean = LeanRedis(r)
    try:
        await lean.execute_many([("SET", f"k{i}", f"v{i}") for i in range(300)])
        got = await asyncio.gather(*(lean.execute("GET", f"k{i}") for i in range(300)))
        assert got == [f"v{i}".encode() for i in range(300)]
        many = await asyncio.gather(
            *(lean.execute_many([("GET", f"k{i}"), ("STRLEN", f"k{i}")]) for i in range(50))
        )
        assert many == [[f"v{i}".encode(), len(f"v{i}")] for i in range(50)]
    finally:
        await lean.aclose()


async def test_an_error_reply_is_raised_alone_and_kept_in_place_in_a_batch(r: Redis) -> None:
    lean = LeanRedis(r)
    try:
        await lean.execute("SET", "text", "x")
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            await lean.execute("LPUSH", "text", "y")
        first, failed, last = await lean.execute_many([("INCR", "n"), ("INCR", "text"), ("GET", "n")])
        assert (first, last) == (1, b"1") and isinstance(failed, ResponseError)
        assert await lean.execute("PING") == b"PONG"  # the connection is still in step
    finally:
        await lean.aclose()


async def test_a_lost_connection_fails_every_waiter_and_the_next_command_reconnects(r: Redis) -> None:
    reader = LeanRedis(r, blocking=True)
    try:
        await reader.execute("CLIENT", "SETNAME", "lean-reader")
        waiting = asyncio.ensure_future(reader.execute("XREAD", "BLOCK", 10_000, "STREAMS", "s", "$"))
        await until_blocked(r, "lean-reader")
        await r.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(waiting, 5)
        await r.xadd("s", {"r": "1"})
        entries = stream_entries(await reader.execute("XREAD", "STREAMS", "s", "0-0"))
        assert [fields for _, fields in entries] == [{b"r": b"1"}]
    finally:
        await reader.aclose()


async def test_no_reply_within_the_socket_timeout_raises_and_the_connection_is_replaced(
    server: RedisServer, r: Redis
) -> None:
    client = Redis.from_url(server.url, socket_timeout=0.2)
    lean = LeanRedis(client)
    try:
        assert await lean.execute("PING") == b"PONG"
        await r.execute_command("CLIENT", "PAUSE", 700)
        with pytest.raises(RedisTimeoutError):
            await lean.execute("PING")
        await asyncio.sleep(0.7)
        assert await lean.execute("PING") == b"PONG"
    finally:
        await lean.aclose()
        await client.aclose()


async def test_a_caller_that_gives_up_leaves_the_connection_in_step(server: RedisServer, r: Redis) -> None:
    lean = LeanRedis(r)
    try:
        await r.execute_command("CLIENT", "PAUSE", 300)
        abandoned = asyncio.ensure_future(lean.execute("ECHO", "first"))
        await asyncio.sleep(0.05)
        abandoned.cancel()
        assert await lean.execute("ECHO", "second") == b"second"  # not "first"
    finally:
        await lean.aclose()


async def test_readonly_closes_the_connection_as_redis_py_does_after_a_failover(
    server: RedisServer, r: Redis
) -> None:
    lean = LeanRedis(r)
    try:
        await lean.execute("CLIENT", "SETNAME", "lean-writer")
        await r.execute_command("REPLICAOF", "127.0.0.1", "1")  # a replica of nothing: read-only
        try:
            with pytest.raises(RedisConnectionError, match="failover"):
                await lean.execute("SET", "k", "v")
            with pytest.raises(RedisConnectionError, match="failover"):
                await lean.execute_many([("GET", "k"), ("SET", "k", "v")])
        finally:
            await r.execute_command("REPLICAOF", "NO", "ONE")
        assert "lean-writer" not in await names_of_clients(r)
        assert await lean.execute("SET", "k", "v") == b"OK"
    finally:
        await lean.aclose()


async def test_a_script_redis_lacks_is_loaded_and_run(r: Redis) -> None:
    lean = LeanRedis(r)
    script = LeanScript("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    try:
        assert await script(lean, ["n"], [2]) == 2
        await r.script_flush()
        assert await script(lean, ["n"], [3]) == 5
        with pytest.raises(NoScriptError):
            await lean.execute("EVALSHA", "0" * 40, 0)
    finally:
        await lean.aclose()


async def test_a_push_first_script_sends_its_ping_in_the_same_call_and_answers_as_any(r: Redis) -> None:
    """push_first: a PING rides ahead of every EVALSHA (so that what the script publishes leaves
    Redis before the reply: the order ops/miss_timeline.py measures); the caller still gets the
    script's own reply, its error, and a script Redis lost is loaded and run."""
    lean = LeanRedis(r)
    script = LeanScript(
        "redis.call('PUBLISH', KEYS[1], ARGV[1]) "
        "if ARGV[1] == 'bad' then return redis.error_reply('ERR bad') end "
        "return redis.call('INCR', KEYS[2])",
        push_first=True,
    )
    subscriber = r.pubsub()
    await subscriber.subscribe("inbox")
    await subscriber.get_message(timeout=1)  # the subscription's confirmation
    pings = (await r.info("commandstats")).get("cmdstat_ping", {}).get("calls", 0)
    try:
        assert await script(lean, ["inbox", "n"], ["job"]) == 1
        message = await subscriber.get_message(timeout=1)
        assert message is not None and message["data"] == b"job"
        assert (await r.info("commandstats"))["cmdstat_ping"]["calls"] == pings + 1
        with pytest.raises(ResponseError, match="bad"):
            await script(lean, ["inbox", "n"], ["bad"])
        await r.script_flush()
        assert await script(lean, ["inbox", "n"], ["again"]) == 2
    finally:
        await subscriber.aclose()
        await lean.aclose()


async def test_it_connects_as_its_client_would_password_database_and_name(
    server: RedisServer, r: Redis
) -> None:
    await r.config_set("requirepass", "s3cret")
    try:
        client = Redis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/3", client_name="edge-front:x")
        lean = LeanRedis(client)
        try:
            assert await lean.execute("CLIENT", "GETNAME") == b"edge-front:x"
            await lean.execute("SET", "where", "db3")
            assert await client.get("where") == b"db3"
            assert await lean.execute("EXISTS", "where") == 1
        finally:
            await lean.aclose()
            await client.aclose()
        wrong = Redis.from_url(f"redis://:wrong@127.0.0.1:{server.port}/0")
        with pytest.raises(AuthenticationError):
            await LeanRedis(wrong).execute("PING")
        await wrong.aclose()
    finally:
        authed = Redis.from_url(f"redis://:s3cret@127.0.0.1:{server.port}/0")
        await authed.config_set("requirepass", "")
        await authed.aclose()


async def test_nothing_listening_is_a_connection_error(r: Redis) -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(RedisConnectionError, match=r"127\.0\.0\.1:1\b"):
        await LeanRedis(client).execute("PING")
    await client.aclose()


async def test_callers_waiting_on_a_silent_redis_share_one_attempt_to_connect() -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # never answers the connection's set-up

    listener = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    client = Redis.from_url(f"redis://127.0.0.1:{port}/0", client_name="n", socket_connect_timeout=0.3)
    lean = LeanRedis(client)
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(*(lean.execute("PING") for _ in range(20)), return_exceptions=True)
        assert all(isinstance(r, RedisConnectionError) for r in results)
        assert asyncio.get_running_loop().time() - started < 3  # one 0.3 s attempt, not twenty
        assert len(accepted) == 1
    finally:
        await lean.aclose()
        await client.aclose()
        for writer in accepted:
            writer.close()
        listener.close()


async def test_a_script_started_is_on_the_wire_before_it_is_awaited(r: Redis) -> None:
    lean = LeanRedis(r)
    script = LeanScript("return redis.call('INCR', KEYS[1])")
    try:
        assert await script.start(lean, ["n"], []) == 1  # no connection yet: opened, then sent
        started = script.start(lean, ["n"], [])
        await asyncio.sleep(0.05)  # not awaited yet, and already run
        assert await r.get("n") == b"2"
        assert await started == 2
        await r.script_flush()
        assert await script.start(lean, ["n"], []) == 3  # NOSCRIPT: loaded, run once
        await r.set("n", "text")
        with pytest.raises(ResponseError):
            await script.start(lean, ["n"], [])
    finally:
        await lean.aclose()


async def test_it_connects_over_a_unix_socket_too(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    unix_server = RedisServer(
        extra_args=("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    ).start()
    client = Redis.from_url(f"unix://{socket_path}?db=2")
    lean = LeanRedis(client)
    try:
        await lean.execute("SET", "where", "db2")
        assert await client.get("where") == b"db2"
    finally:
        await lean.aclose()
        await client.aclose()
        unix_server.stop()
