"""Waiting for a started process to answer over HTTP."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable


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
