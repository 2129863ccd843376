"""The front's listening socket, bound before anything else starts.

Binding first turns "port taken" into one clear line and exit code 2, instead of a front that
starts its Redis connections and background tasks, fails to bind, and hangs while shutting them
down (and, under `up`, a stack that reports ready because *another* process answered).
"""

from __future__ import annotations

import errno
import socket


class PortInUse(RuntimeError):
    pass


def bind_listener(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening; PortInUse when another process has it.

    `reuse_port` (SO_REUSEPORT) lets the front group bind one socket per front process on the
    same port; the kernel then spreads new connections over them (see `edge_agent.front_group`).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart must not wait for the last run's connections in TIME_WAIT. It
    # does not let two processes listen on one port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise PortInUse(
                f"port {port} on {host} is already in use by another process; "
                "stop it or choose another port (--port or PORT)"
            ) from None
        raise PortInUse(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock
