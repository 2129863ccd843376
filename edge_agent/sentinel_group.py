"""A Redis Sentinel group on loopback for tests: a primary, a replica and three sentinels.

Each is a redis-server child process (see edge_agent.redis_server); a sentinel is the same binary
started with `--sentinel` and a config file of its own that it may rewrite (Sentinel records
what it learns there). Timeouts are short so that a failover happens in seconds: a primary is
judged down after `down_after_ms` without an answer, and a replica promoted right after.
"""

from __future__ import annotations

import time
from pathlib import Path

import redis
from redis.exceptions import RedisError

from edge_agent.redis_server import RedisServer, find_redis_server


class SentinelServer(RedisServer):
    """redis-server in Sentinel mode, monitoring `primary` as `master`."""

    def __init__(
        self, master: str, primary: RedisServer, down_after_ms: int, failover_timeout_ms: int
    ) -> None:
        super().__init__()
        self.settings = [
            f"sentinel monitor {master} 127.0.0.1 {primary.port} 2",  # quorum 2 of 3
            f"sentinel down-after-milliseconds {master} {down_after_ms}",
            f"sentinel failover-timeout {master} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master} 1",
        ]

    def _args(self) -> list[str]:
        config = Path(self.dir) / "sentinel.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            "loglevel warning",
            f"logfile {Path(self.dir) / 'sentinel.log'}",
            *self.settings,
        ]
        config.write_text("\n".join(lines) + "\n")
        return [find_redis_server(), str(config), "--sentinel"]


class SentinelGroup:
    def __init__(
        self,
        master: str = "edge",
        sentinels: int = 3,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.master = master
        self.primary = RedisServer()
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelServer] = []
        self._count = sentinels
        self._timeouts = (down_after_ms, failover_timeout_ms)

    @property
    def env(self) -> dict[str, str]:
        """What points the gateway's processes at this group."""
        return {
            "REDIS_SENTINELS": ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels),
            "REDIS_SENTINEL_MASTER": self.master,
        }

    def start(self, timeout_s: float = 20.0) -> SentinelGroup:
        """Start every node; return once each sentinel knows the replica and the other sentinels
        (before that, a failover could not be agreed on)."""
        self.primary.start()
        self.replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(self.primary.port))).start()
        for _ in range(self._count):
            self.sentinels.append(SentinelServer(self.master, self.primary, *self._timeouts).start())
        deadline = time.monotonic() + timeout_s
        while not self._ready():
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the Sentinel group did not form (sentinels never saw each other)")
            time.sleep(0.1)
        return self

    def _ready(self) -> bool:
        try:
            for sentinel in self.sentinels:
                state = self._ask(sentinel, "SENTINEL", "MASTER", self.master)
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < self._count - 1:
                    return False
            return True
        except (RedisError, OSError, KeyError):
            return False

    def _ask(self, server: RedisServer, *command: str) -> dict[str, str]:
        client = redis.Redis(port=server.port, socket_timeout=1, decode_responses=True)
        try:
            reply = client.execute_command(*command)
        finally:
            client.close()
        if isinstance(reply, list):  # a flat field/value list (RESP2)
            return dict(zip(reply[::2], reply[1::2], strict=True))
        return dict(reply)

    def master_port(self) -> int | None:
        """The primary's port as the first sentinel that answers names it (None: none answers)."""
        for sentinel in self.sentinels:
            try:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                try:
                    address = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master)
                finally:
                    client.close()
                return int(address[1])
            except (RedisError, OSError, TypeError):
                continue
        return None

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            if server is not None:
                server.stop()
