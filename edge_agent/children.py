"""Child processes that die with their parent.

`edge-agent up` and the test stacks start redis-server, workers and fronts as children. If the
parent is killed with SIGKILL it cannot stop them, and they would keep running and holding their
ports. On Linux each child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG,
kept across exec, so it covers redis-server too). Elsewhere there is no such call and children
outlive a SIGKILLed parent, as before.

Children also get a process group of their own: Ctrl-C in a terminal signals the whole
foreground group, and a child stopping on its own at that moment (Redis before the front) makes
the others log connection errors. The parent stops them in order instead.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl: Callable[..., int] = libc.prctl
    except (OSError, AttributeError):
        return None
    return prctl


# Resolved once here: the function that runs in the forked child must not import or allocate.
_PRCTL = _prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    prctl = _PRCTL
    if prctl is None:
        return None

    def in_child() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl: then nobody would signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def spawn(
    args: Sequence[str],
    env: dict[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """`subprocess.Popen(args)` in a process group of its own, sent SIGTERM when this process dies."""
    return subprocess.Popen(
        list(args),
        env=env,
        stdout=stdout,
        stderr=stderr,
        pass_fds=tuple(pass_fds),
        process_group=0,
        preexec_fn=_die_with(os.getpid()),
    )


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every process still running, then wait for each (SIGKILL after 10 s)."""
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
