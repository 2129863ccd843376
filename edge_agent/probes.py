"""Waiting for a started process to listen on its port and answer over HTTP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping


def wait_http(url: str, timeout_s: float = 30.0, watch: Iterable[subprocess.Popen[bytes]] = ()) -> None:
    """Return once `url` answers 200; raise RuntimeError if a watched process exits or time runs out."""
    watched = list(watch)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in watched:
            if proc.poll() is not None:
                raise RuntimeError(f"a child process exited with {proc.returncode} while waiting for {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s")


def _listening_inodes(port: int) -> set[str] | None:
    """Inodes of the sockets listening on `port` (any address), or None where /proc cannot tell."""
    found: set[str] = set()
    seen_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        seen_table = True
        for line in lines:
            fields = line.split()
            # fields: sl, local_address (hex addr:hex port), rem_address, st (0A = LISTEN), ..., inode
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found if seen_table else None


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def port_owner(pid: int, port: int) -> str | None:
    """Who listens on `port`: "ours" (process `pid`), "other" (another process), or None (nobody yet).

    Where /proc is missing (not Linux), a listener is taken to be ours.
    """
    listening = _listening_inodes(port)
    if listening is None:
        with socket.socket() as s:
            return "ours" if s.connect_ex(("127.0.0.1", port)) == 0 else None
    if not listening:
        return None
    return "ours" if listening & _socket_inodes(pid) else "other"


class PortTaken(RuntimeError):
    """Another process took the port before the child bound it (the free-port race)."""


def wait_listening(
    proc: subprocess.Popen[bytes],
    port: int,
    ready: Callable[[], bool] = lambda: True,
    timeout_s: float = 30.0,
) -> None:
    """Return once `proc` itself listens on `port` and `ready()` is true.

    Raises PortTaken if another process holds the port (the child cannot bind it; start it again
    on another port), RuntimeError if the child exits for another reason or time runs out.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            if port_owner(proc.pid, port) is not None:
                raise PortTaken(f"port {port} was taken by another process")
            raise RuntimeError(f"a child process exited with {proc.returncode} before listening on {port}")
        owner = port_owner(proc.pid, port)
        if owner == "other":
            raise PortTaken(f"port {port} was taken by another process")
        if owner == "ours" and ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"a child process did not listen on port {port} within {timeout_s:.0f} s")


def answers_200(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    return check


def workers_ready(front_url: str, expected: Mapping[str, int]) -> Callable[[], bool]:
    """A check: the front's `/health` shows, for each provider, a live worker and at least the
    expected number of registered ones. `/health/ready` is not enough to start sending requests:
    it turns ready with the first provider's first worker, while the others are still starting."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(f"{front_url}/health", timeout=1) as response:
                body = response.read()
        except urllib.error.HTTPError as e:  # 503 while degraded: the body still tells who is up
            body = e.read()
        except (urllib.error.URLError, OSError):
            return False
        try:
            providers = json.loads(body)["providers"]
            # A provider the front's config does not serve is not listed: its workers idle.
            return all(
                providers[p]["worker_alive"] and providers[p]["workers"] >= n
                for p, n in expected.items()
                if p in providers
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return False

    return check
