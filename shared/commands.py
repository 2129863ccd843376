"""Redis commands collected as plain tuples, for one write on a lean connection (shared/resp.py).

Code that queues writes for a round trip (a worker's publication, a flight's fan-out, a job's
release) takes a `CommandSink`: redis-py's pipeline is one, and so is `CommandList`, which only
records each command's arguments. The publication is every miss's round trip: building it through
a redis-py pipeline, only to read its command stack back out, cost ~8 µs of CPU per answer
(measured, warm; more on a cold cache) on the miss's path.
"""

from __future__ import annotations

from typing import Any, Protocol

Command = tuple[Any, ...]


class CommandSink(Protocol):
    """The commands of redis-py's pipeline that writers queue (its argument names and order)."""

    def __len__(self) -> int: ...

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any: ...

    def set(self, name: str, value: bytes | str, ex: int | None = None) -> Any: ...

    def delete(self, *names: str) -> Any: ...

    def zrem(self, name: str, *values: str) -> Any: ...

    def srem(self, name: str, *values: str) -> Any: ...

    def incr(self, name: str, amount: int = 1) -> Any: ...

    def hincrby(self, name: str, key: str, amount: int = 1) -> Any: ...

    def expire(self, name: str, time: int) -> Any: ...

    def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        minid: int | None = None,
    ) -> Any: ...


class CommandList:
    """A `CommandSink` that keeps each command's arguments, in order, in `commands`."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def __len__(self) -> int:
        return len(self.commands)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> None:
        self.commands.append(("EVALSHA", sha, numkeys, *keys_and_args))

    def set(self, name: str, value: bytes | str, ex: int | None = None) -> None:
        self.commands.append(("SET", name, value) if ex is None else ("SET", name, value, "EX", ex))

    def delete(self, *names: str) -> None:
        self.commands.append(("DEL", *names))

    def zrem(self, name: str, *values: str) -> None:
        self.commands.append(("ZREM", name, *values))

    def srem(self, name: str, *values: str) -> None:
        self.commands.append(("SREM", name, *values))

    def incr(self, name: str, amount: int = 1) -> None:
        self.commands.append(("INCRBY", name, amount))  # as redis-py

    def hincrby(self, name: str, key: str, amount: int = 1) -> None:
        self.commands.append(("HINCRBY", name, key, amount))

    def expire(self, name: str, time: int) -> None:
        self.commands.append(("EXPIRE", name, time))

    def xadd(
        self,
        name: str,
        fields: dict[Any, Any],
        *,
        maxlen: int | None = None,
        approximate: bool = True,
        minid: int | None = None,
    ) -> None:
        trim: Command = ()
        if maxlen is not None:
            trim = ("MAXLEN", "~", maxlen) if approximate else ("MAXLEN", maxlen)
        elif minid is not None:
            trim = ("MINID", "~", minid) if approximate else ("MINID", minid)
        pairs = [item for pair in fields.items() for item in pair]
        self.commands.append(("XADD", name, *trim, "*", *pairs))
