"""The front group's decisions: restart a dead child, give up on a refused start or a crash loop;
its sockets share one port; its metrics directory starts empty."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import front_group
from edge_agent.front_group import MAX_RESTARTS, FrontGroup
from edge_agent.listen import PortInUse, bind_listener
from edge_agent.redis_server import free_port


@pytest.fixture
def group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FrontGroup]:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    g = FrontGroup("127.0.0.1", free_port(), 2, drain_s=1)
    try:
        yield g
    finally:
        for sock in g.sockets:
            sock.close()


def exited(code: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    proc.wait()
    return proc


def test_a_dead_child_is_restarted_until_it_is_a_crash_loop(group: FrontGroup) -> None:
    for _ in range(MAX_RESTARTS):
        assert group.child_exited(0, exited(1)) is None  # restart it
    assert group.child_exited(0, exited(1)) == 1  # one death too many within the window: give up


def test_deaths_outside_the_window_are_forgotten(group: FrontGroup, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(front_group.time, "monotonic", lambda: now[0])
    for _ in range(MAX_RESTARTS * 3):
        assert group.child_exited(0, exited(1)) is None
        now[0] += front_group.RESTART_WINDOW_S / MAX_RESTARTS + 1


def test_a_child_that_refuses_to_start_stops_the_group(group: FrontGroup) -> None:
    assert group.child_exited(0, exited(2)) == 2


def test_the_sockets_share_one_port_and_listen(group: FrontGroup) -> None:
    [port] = {sock.getsockname()[1] for sock in group.sockets}
    assert len(group.sockets) == 2
    assert all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in group.sockets)
    with pytest.raises(PortInUse):  # a process without SO_REUSEPORT cannot have the port
        bind_listener("127.0.0.1", port)


def test_the_metrics_directory_is_emptied_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_123.db").write_bytes(b"old run")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    assert front_group.metrics_dir() == directory
    assert list(directory.iterdir()) == []


def test_without_a_configured_directory_each_group_gets_a_new_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    first, second = front_group.metrics_dir(), front_group.metrics_dir()
    try:
        assert first != second and list(first.iterdir()) == []
    finally:
        first.rmdir()
        second.rmdir()
