"""The gateway benchmark: real processes on this machine, wrk as the load generator.

    ./edge bench [--runs 3] [--duration 5]

Starts redis-server, the fake upstream (zero added latency), one worker and one front, then
measures, each scenario `--runs` times, reporting medians:
- L1-hit throughput and latency of one front process (wrk, 32 connections, one cached body);
- miss-path added latency: gateway minus direct-to-upstream, p50 and p99, at 1 and 64
  connections, every request a unique body so every one is a miss through the queue;
- miss throughput at 64 connections;
- streaming: time to first token and gap between chunks, gateway minus direct, at 1 and 64
  concurrent streams (ops/stream_load.py; the upstream sends 20 chunks 10 ms apart);
- resident memory (RSS) of the front and the worker after the load.

    ./edge bench --embeddings [--runs 5] [--duration 5]

measures only the c=1 miss of POST /v1/embeddings next to the chat miss (each against the
upstream direct, alternating runs): one short text, base64 (the openai SDK's default) of
text-embedding-3-small's 1536 dimensions, every request a unique text.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.stream_load import StreamStats
from ops.stream_load import run as stream_run

# Streams of 20 words, one chunk each, 10 ms apart at the upstream.
STREAM_PROMPT = "[[fake:words=20]] [[fake:chunk_delay_ms=10]] stream"

# A ~1 KB chat request, like the ones the targets were set for.
SYSTEM = "You are a helpful assistant. " * 30
WRK_SCRIPT = r"""
local counter = 0
local unique = os.getenv("BENCH_UNIQUE") == "1"
local prefix = os.getenv("BENCH_PREFIX") or "p"
local system = os.getenv("BENCH_SYSTEM") or ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "x")
local embeddings = os.getenv("BENCH_KIND") == "embeddings"
local function body(n)
  if embeddings then
    return '{"model":"text-embedding-3-small","input":"benchmark ' .. prefix .. ' ' .. n ..
           '","encoding_format":"base64"}'
  end
  return '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"' .. system ..
         '"},{"role":"user","content":"benchmark ' .. prefix .. ' ' .. n .. '"}],"temperature":0}'
end
wrk.body = body("fixed")
request = function()
  if unique then
    counter = counter + 1
    return wrk.format(nil, nil, nil, body(tostring(math.random(1, 1e9)) .. "-" .. counter))
  end
  return wrk.format()
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, connections: int, duration: int, script: Path, env: dict[str, str]) -> Run:
    threads = 1 if connections == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    pct = {m[0]: _ms(m[1], m[2]) for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    if socket_errors:
        errors += sum(int(x) for x in socket_errors.groups())
    return Run(rps=rps, p50_ms=pct["50"], p99_ms=pct["99"], errors=errors)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


FIXED_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "benchmark p fixed"}],
    "temperature": 0,
}


def _post(url: str, key: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request) as response:
        answer: dict[str, object] = json.loads(response.read())
        return answer


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--embeddings", action="store_true", help="only the c=1 miss of embeddings next to chat's"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk not found; install it (Debian: apt-get install wrk)")
    if args.embeddings:
        embeddings_bench(args.runs, args.duration)
        return

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    script = tmp / "chat.lua"
    script.write_text(WRK_SCRIPT)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        stack.start_redis()
        stack.start_upstream()
        worker = stack.start_worker("openai")
        front = stack.start_front(wait_path="/health/ready")
        gateway = f"{front.url}/v1/chat/completions"
        direct = f"{stack.upstream_url}/v1/chat/completions"
        base_env = {**stack.env, "BENCH_KEY": MASTER_KEY, "BENCH_SYSTEM": SYSTEM}
        d = args.duration

        def scenario(url: str, c: int, unique: bool, tag: str) -> list[Run]:
            runs = []
            for i in range(args.runs):
                env = {**base_env, "BENCH_UNIQUE": "1" if unique else "0", "BENCH_PREFIX": f"{tag}{i}"}
                runs.append(wrk(url, c, d, script, env))
            return runs

        # A virtual key with limits and a budget, as a tenant would have (its own cache namespace).
        virtual = _post(
            f"{front.url}/key/generate",
            MASTER_KEY,
            {"key_alias": "bench", "rpm_limit": 10**9, "tpm_limit": 10**12, "max_budget": 10**6},
        )["key"]
        # Warm up: connections, L1 entry for the fixed body, JIT-free but caches and pools.
        wrk(gateway, 8, 2, script, {**base_env, "BENCH_UNIQUE": "1", "BENCH_PREFIX": "warm"})
        for key in (MASTER_KEY, virtual):
            _post(gateway, key, FIXED_BODY)

        l1 = scenario(gateway, 32, False, "l1")
        miss1 = scenario(gateway, 1, True, "m1")
        base_env = {**base_env, "BENCH_KEY": virtual}
        keyed_l1 = scenario(gateway, 32, False, "kl1")
        keyed_miss1 = scenario(gateway, 1, True, "km1")
        base_env = {**base_env, "BENCH_KEY": MASTER_KEY}
        direct1 = scenario(direct, 1, True, "d1")
        miss64 = scenario(gateway, 64, True, "m64")
        direct64 = scenario(direct, 64, True, "d64")

        def streams(url: str, c: int) -> list[StreamStats]:
            return [stream_run(url, MASTER_KEY, c, d, STREAM_PROMPT) for _ in range(args.runs)]

        stream1, stream_direct1 = streams(gateway, 1), streams(direct, 1)
        stream64, stream_direct64 = streams(gateway, 64), streams(direct, 64)
        front_rss, worker_rss = rss_mb(front.process.pid), rss_mb(worker.pid)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    errors = sum(r.errors for r in l1 + miss1 + miss64) + sum(s.errors for s in stream1 + stream64)

    def added(gw: list[StreamStats], direct: list[StreamStats], attr: str) -> float:
        gateway_median = statistics.median(getattr(s, attr) for s in gw)
        return gateway_median - statistics.median(getattr(s, attr) for s in direct)

    rows = [
        ("L1 hit, c=32: requests/s", median(l1, "rps"), ">= 8000"),
        ("L1 hit, c=32: p50 ms", median(l1, "p50_ms"), ""),
        ("L1 hit, c=32: p99 ms", median(l1, "p99_ms"), "<= 5"),
        ("miss, c=1: added p50 ms", median(miss1, "p50_ms") - median(direct1, "p50_ms"), "<= 2.5"),
        ("miss, c=1: added p99 ms", median(miss1, "p99_ms") - median(direct1, "p99_ms"), "<= 6"),
        ("virtual key: L1 hit, c=32: requests/s", median(keyed_l1, "rps"), ">= 90 % of master"),
        (
            "virtual key: miss, c=1: added p50 ms",
            median(keyed_miss1, "p50_ms") - median(direct1, "p50_ms"),
            "<= master + 0.15",
        ),
        ("miss, c=64: added p50 ms", median(miss64, "p50_ms") - median(direct64, "p50_ms"), ""),
        ("miss, c=64: added p99 ms", median(miss64, "p99_ms") - median(direct64, "p99_ms"), ""),
        ("miss, c=64: requests/s through the queue", median(miss64, "rps"), ">= 1000"),
        ("direct to upstream, c=1: p50 ms", median(direct1, "p50_ms"), ""),
        ("direct to upstream, c=64: requests/s", median(direct64, "rps"), ""),
        ("stream, c=1: TTFT added p50 ms", added(stream1, stream_direct1, "ttft_p50"), "<= 3"),
        ("stream, c=1: TTFT added p99 ms", added(stream1, stream_direct1, "ttft_p99"), "<= 8"),
        ("stream, c=1: inter-chunk added p50 ms", added(stream1, stream_direct1, "gap_p50"), "<= 1"),
        ("stream, c=64: TTFT added p50 ms", added(stream64, stream_direct64, "ttft_p50"), ""),
        ("stream, c=64: TTFT added p99 ms", added(stream64, stream_direct64, "ttft_p99"), ""),
        ("stream, c=64: inter-chunk added p50 ms", added(stream64, stream_direct64, "gap_p50"), ""),
        ("front RSS MB", front_rss, "<= 120"),
        ("worker RSS MB", worker_rss, "<= 120"),
    ]
    print(f"\n{args.runs} runs of {args.duration} s each, medians; non-2xx or socket errors: {errors}\n")
    print("| measure | value | target |\n|---|---:|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:,.2f} | {target} |")


def embeddings_bench(runs: int, duration: int) -> None:
    """Chat's and embeddings' c=1 miss, added over the upstream direct, in alternating runs (the
    machine drifts more between minutes than the two differ)."""
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    results: dict[str, list[Run]] = {}
    try:
        stack.start_redis()
        stack.start_upstream()
        stack.start_worker("openai")
        front = stack.start_front(wait_path="/health/ready")
        urls = {
            "chat": (f"{front.url}/v1/chat/completions", f"{stack.upstream_url}/v1/chat/completions"),
            "embeddings": (f"{front.url}/v1/embeddings", f"{stack.upstream_url}/v1/embeddings"),
        }
        base_env = {**stack.env, "BENCH_KEY": MASTER_KEY, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1"}
        for kind in urls:  # warm up both paths
            wrk(urls[kind][0], 4, 2, script, {**base_env, "BENCH_KIND": kind, "BENCH_PREFIX": "warm"})
        for i in range(runs):
            for kind, (gateway, direct) in urls.items():
                for where, url in (("gateway", gateway), ("direct", direct)):
                    env = {**base_env, "BENCH_KIND": kind, "BENCH_PREFIX": f"{kind}{where}{i}"}
                    results.setdefault(f"{kind} {where}", []).append(wrk(url, 1, duration, script, env))
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    errors = sum(r.errors for rs in results.values() for r in rs)
    print(f"\n{runs} alternating runs of {duration} s each, medians; non-2xx or socket errors: {errors}\n")
    print("| measure | chat | embeddings |\n|---|---:|---:|")
    for label, attr in (("miss, c=1: added p50 ms", "p50_ms"), ("miss, c=1: added p99 ms", "p99_ms")):
        added = [median(results[f"{k} gateway"], attr) - median(results[f"{k} direct"], attr) for k in urls]
        print(f"| {label} | {added[0]:.2f} | {added[1]:.2f} |")
    direct = [median(results[f"{k} direct"], "p50_ms") for k in urls]
    print(f"| direct to upstream, c=1: p50 ms | {direct[0]:.2f} | {direct[1]:.2f} |")


if __name__ == "__main__":
    main()
