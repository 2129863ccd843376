"""This gateway's miss next to Portkey's direct proxying, in one run: `./edge bench --portkey`.

Issue 9 set the miss's c=1 target from Portkey's added latency measured on this machine
(0.9-1.0 ms, ../shared/NOTES.md). This machine's two shared vCPUs drift by more than 0.2 ms
between sessions (the same commit measured 1.07 ms one day and 1.2-1.3 ms another), so an
absolute number from another day says little; the peer measured in the same run, against the
same fake upstream, with the same wrk script and request bodies, does.

Portkey (`@portkey-ai/gateway`, a Node.js server) is installed with npm into
~/.cache/llm-edge-agent/portkey-<version> on first use (needs `node` and `npm`; nothing else is
installed) and pointed at the fake upstream with its `x-portkey-custom-host` header. Rounds
alternate direct, gateway and Portkey at c=1, then both at c=64; medians over rounds.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.bench import SYSTEM, WRK_SCRIPT, Run, miss_stack, wrk

PORTKEY_VERSION = "1.15.2"  # the version NOTES.md measured
PORTKEY_DIR = Path.home() / ".cache" / "llm-edge-agent" / f"portkey-{PORTKEY_VERSION}"
PORTKEY_SERVER = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


def install_portkey() -> Path:
    """Portkey's server script, installed with npm if it is not yet (no install scripts run)."""
    if not PORTKEY_SERVER.exists():
        if not (shutil.which("node") and shutil.which("npm")):
            raise SystemExit("bench --portkey: needs node and npm (Debian: apt-get install nodejs npm)")
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(PORTKEY_DIR), "--no-save", "--ignore-scripts",
             f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return PORTKEY_SERVER


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, headers: dict[str, str], timeout_s: float = 20.0) -> None:
    """Until Portkey answers a chat completion through to the fake upstream."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "ready?"}]}
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.post(url, json=body, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("bench --portkey: Portkey did not answer through the fake upstream")
        time.sleep(0.2)


def portkey_bench(runs: int, duration: int) -> None:
    server = install_portkey()
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    portkey: subprocess.Popen[bytes] | None = None
    results: dict[str, list[Run]] = {name: [] for name in ("direct1", "gw1", "pk1", "gw64", "pk64")}
    try:
        gateway, direct, script = miss_stack(stack)
        port = _free_port()
        portkey = subprocess.Popen(
            ["node", str(server), f"--port={port}", "--headless"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NODE_ENV": "production"},
        )
        peer = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"x-portkey-provider": "openai", "x-portkey-custom-host": f"{stack.upstream_url}/v1"}
        _wait_ready(peer, {**headers, "Authorization": "Bearer x"})
        peer_script = tmp / "portkey.lua"
        extra = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
        peer_script.write_text(WRK_SCRIPT.replace('wrk.method = "POST"\n', f'wrk.method = "POST"\n{extra}'))
        env = {**stack.env, "BENCH_KEY": MASTER_KEY, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1"}
        targets = {"direct": (direct, script), "gw": (gateway, script), "pk": (peer, peer_script)}
        for name in ("gw", "pk"):  # warm up: connections, JIT
            wrk(targets[name][0], 8, 2, targets[name][1], {**env, "BENCH_PREFIX": "warm"})
        for i in range(runs):
            order = ["direct", "gw", "pk"] if i % 2 == 0 else ["direct", "pk", "gw"]
            for c, names in ((1, order), (64, order[1:])):
                for name in names:
                    url, lua = targets[name]
                    run_env = {**env, "BENCH_PREFIX": f"{name}{c}-{i}"}
                    results[f"{name}{c}"].append(wrk(url, c, duration, lua, run_env))
    finally:
        if portkey is not None:
            portkey.terminate()
            portkey.wait(10)
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    _print(results, runs, duration)


def _print(results: dict[str, list[Run]], runs: int, duration: int) -> None:
    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in results[name])

    def added(name: str) -> list[float]:
        return [g.p50_ms - d.p50_ms for g, d in zip(results[name], results["direct1"], strict=True)]

    errors = sum(r.errors for rs in results.values() for r in rs)
    print(f"\n{runs} alternating rounds of {duration} s each, medians; non-2xx or socket errors: {errors}\n")
    print("| measure | this gateway (queued miss) | Portkey (direct proxying) |\n|---|---:|---:|")
    gw, pk = added("gw1"), added("pk1")
    print(f"| miss, c=1: added p50 ms | {statistics.median(gw):.2f} | {statistics.median(pk):.2f} |")
    print(f"| miss, c=1: added p50 ms, range | {min(gw):.2f}-{max(gw):.2f} | {min(pk):.2f}-{max(pk):.2f} |")
    lower = sum(g < p for g, p in zip(gw, pk, strict=True))
    print(f"| miss, c=1: rounds with the lower added p50 | {lower} of {runs} | {runs - lower} of {runs} |")
    print(f"| miss, c=64: requests/s | {med('gw64', 'rps'):,.0f} | {med('pk64', 'rps'):,.0f} |")
    print(f"| miss, c=64: p50 ms | {med('gw64', 'p50_ms'):.2f} | {med('pk64', 'p50_ms'):.2f} |")
    print(f"\ndirect to the fake upstream, c=1: p50 {med('direct1', 'p50_ms'):.3f} ms")
