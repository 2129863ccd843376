"""CommandList writes on the wire exactly what redis-py's pipeline writes for the same calls."""

from __future__ import annotations

from collections.abc import Callable

import hiredis
import pytest
from redis.asyncio import Redis

from shared.commands import CommandList, CommandSink

CALLS: list[Callable[[CommandSink], object]] = [
    lambda p: p.evalsha("a" * 40, 2, "k1", "", 1000, b"reply", 2.5),
    lambda p: p.set("edge:cache:x", b"entry", ex=3600),
    lambda p: p.set("plain", "v"),
    lambda p: p.delete("a", "b", "c"),
    lambda p: p.zrem("queue", "job"),
    lambda p: p.srem("running", "job"),
    lambda p: p.incr("served"),
    lambda p: p.hincrby("usage", "t", 42),
    lambda p: p.expire("usage", 120),
    lambda p: p.xadd("outcomes", {"t": 1, "s": 200, "l": 3.25}, maxlen=1000, approximate=True),
    lambda p: p.xadd("outcomes", {"t": 1}, maxlen=1000, approximate=False),
    lambda p: p.xadd("vectors", {b"p": b"\x00\x01", b"v": b"xy"}, minid=17, approximate=True),
    lambda p: p.xadd("log", {"a": "b"}),
]


@pytest.mark.parametrize("call", CALLS)
def test_each_command_packs_as_redis_py_packs_it(call: Callable[[CommandSink], object]) -> None:
    pipe = Redis().pipeline(transaction=False)
    call(pipe)
    mine = CommandList()
    call(mine)
    ((expected, _),) = pipe.command_stack
    assert len(mine) == 1
    assert hiredis.pack_command(mine.commands[0]) == hiredis.pack_command(tuple(expected))
