"""`edge-agent front --processes N`: N front processes on one port, supervised by this one.

One Python process serves one core's worth of requests; a machine with more cores runs more
fronts. This parent binds N sockets to the port with SO_REUSEPORT, listens on each and hands
socket i to child i (an inherited file descriptor), so:

- the kernel spreads new connections evenly over the N sockets (by a hash of the connection).
  One shared socket would let whichever process wakes first accept every pending connection
  (asyncio and libuv both accept in a loop), leaving the other idle under a burst of connects;
- the port is held by this parent from the first moment: a taken port is one clear line before
  any child starts, as for a single front, and a child that is restarted gets the same socket
  back, so the connections waiting in its queue are served by its successor, not reset;
- each child is an ordinary front with its own front id and its own reply stream.

Metrics stay one coherent /metrics on the one port: every child writes prometheus-client's
multiprocess files into one directory (PROMETHEUS_MULTIPROC_DIR, new and empty for each group)
and answers /metrics with the sum over all of them (`edge_front.metrics.exposition`). Per-process
ports would need Prometheus to find each child, which a Service or compose's DNS cannot name.

A child that dies is restarted (the others keep serving; its gauges are marked dead so their
`live*` sums drop it, its counters stay counted). A child that refuses to start (exit 2: config)
or more than `MAX_RESTARTS` deaths within `RESTART_WINDOW_S` make the whole group drain and exit
non-zero, so a crash loop surfaces to the supervisor above (compose's restart policy, Kubernetes).

SIGTERM or SIGINT to the parent: it closes its copies of the sockets, sends SIGTERM to every
child (each drains its requests in flight, EDGE_DRAIN_S) and waits for all of them; a child
still running `EDGE_DRAIN_S` + 5 s later is killed. Exit 0 when every child stopped cleanly.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from types import FrameType

from edge_agent.children import spawn
from edge_agent.listen import bind_listener

log = logging.getLogger("edge.front_group")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
BACKLOG = 2048  # uvicorn's default
POLL_S = 0.1


def metrics_dir() -> Path:
    """The group's multiprocess directory, empty: PROMETHEUS_MULTIPROC_DIR when the operator set
    one (emptied: files of an earlier run would add its counts to this one's), else a new one."""
    configured = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not configured:
        return Path(tempfile.mkdtemp(prefix="edge-front-metrics-"))
    path = Path(configured)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.glob("*.db"):
        entry.unlink()
    return path


class FrontGroup:
    def __init__(self, host: str, port: int, processes: int, drain_s: int) -> None:
        self.drain_s = drain_s
        # Bound and listening before any child starts: PortInUse (from bind_listener) stops here.
        self.sockets: list[socket.socket] = []
        try:
            for _ in range(processes):
                sock = bind_listener(host, port, reuse_port=True)
                sock.listen(BACKLOG)
                self.sockets.append(sock)
        except BaseException:
            for sock in self.sockets:
                sock.close()
            raise
        self.dir = metrics_dir()
        self.owns_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self.env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.dir)}
        self.children: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.deaths: deque[float] = deque()
        self.stopping = False

    def start_child(self, i: int) -> None:
        fd = self.sockets[i].fileno()
        args = [sys.executable, "-m", "edge_agent", "front", "--fd", str(fd)]
        self.children[i] = spawn(args, self.env, pass_fds=[fd])

    def child_exited(self, i: int, proc: subprocess.Popen[bytes]) -> int | None:
        """Note a child's unexpected exit; the group's exit code if it must stop, else None."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(proc.pid, str(self.dir))
        now = time.monotonic()
        self.deaths.append(now)
        while self.deaths and now - self.deaths[0] > RESTART_WINDOW_S:
            self.deaths.popleft()
        if proc.returncode == 2:
            log.error("front process %d refused to start (exit 2); stopping the group", proc.pid)
            return 2
        if len(self.deaths) > MAX_RESTARTS:
            log.error(
                "front processes died %d times within %.0f s; stopping the group",
                len(self.deaths),
                RESTART_WINDOW_S,
            )
            return 1
        log.warning("front process %d exited with %s; starting another", proc.pid, proc.returncode)
        return None

    def run(self) -> int:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        code = 0
        try:
            for i in range(len(self.children)):
                self.start_child(i)
            while not self.stopping:
                time.sleep(POLL_S)
                for i, proc in enumerate(self.children):
                    if self.stopping or proc is None or proc.poll() is None:
                        continue
                    failed = self.child_exited(i, proc)
                    if failed is not None:
                        code = failed
                        self.stopping = True
                    else:
                        self.start_child(i)
        finally:
            code = self.stop() or code
        return code

    def stop(self) -> int:
        """Drain every child; 1 if one had to be killed or failed while stopping, else 0."""
        for sock in self.sockets:  # the children hold their own copies until they stop listening
            sock.close()
        running = [p for p in self.children if p is not None and p.poll() is None]
        for proc in running:
            proc.terminate()
        deadline = time.monotonic() + self.drain_s + 5
        code = 0
        for proc in running:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("front process %d still running after the drain; killed", proc.pid)
                proc.kill()
                proc.wait()
            # uvicorn re-raises the SIGTERM it handled once it has drained: -SIGTERM is clean too.
            if proc.returncode not in (0, -signal.SIGTERM):
                code = 1
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        return code


def run_group(host: str, port: int, processes: int, drain_s: int) -> None:
    group = FrontGroup(host, port, processes, drain_s)
    log.info("front group: %d processes on %s:%d", processes, host, port)
    code = group.run()
    if code:
        raise SystemExit(code)
