"""The gateway benchmark: real processes on this machine, wrk as the load generator.

    ./edge bench [--runs 3] [--duration 5] [--front-processes N] [--multiprocess-metrics]
                 [--only l1,miss64]

Starts redis-server, the fake upstream (zero added latency), one worker and one front, then
measures, each scenario `--runs` times, reporting medians:
- L1-hit throughput and latency of one front process (wrk, 32 connections, one cached body);
- miss-path added latency: gateway minus direct-to-upstream, p50 and p99, at 1 and 64
  connections, every request a unique body so every one is a miss through the queue;
- miss throughput at 64 connections;
- the Bedrock provider's miss at 1 connection, alternating with the OpenAI one's (SigV4 signing,
  Converse mapping; the fake's own signature and body checks are switched off, so both
  providers' upstream work is alike);
- streaming: time to first token and gap between chunks, gateway minus direct, at 1 and 64
  concurrent streams (ops/stream_load.py; the upstream sends 20 chunks 10 ms apart);
- resident memory (RSS) of the front and the worker after the load.

`--providers [openai,anthropic,gemini,azure]` measures instead each provider's miss path, a
row per provider (ops/provider_bench.py).

`--messages` measures instead Anthropic's Messages API's miss at c=1 (to an Anthropic upstream,
passed through, and to an OpenAI one, translated) next to chat completions'. `--embeddings`
measures the miss at c=1 of POST /v1/embeddings (one short text, base64, the openai SDK's
default, of text-embedding-3-small's 1,536 dimensions) next to chat completions'. `--portkey`
measures instead the miss at c=1 and c=64 next to Portkey's direct proxying against the same fake
upstream, rounds alternating (ops/peer_bench.py; needs node and npm).
`--front-processes N` runs the front as a group of N processes on the one port (`edge-agent front
--processes N`); `--multiprocess-metrics` keeps one front process but with prometheus-client's
multiprocess mode on (what a group's children pay on the hot path); `--only` runs some scenarios
(l1, miss1, bedrock, keyed, miss64, stream), for the rows that compare those.
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
from edge_agent.embedded import FAKE_BEDROCK
from ops.stream_load import StreamStats
from ops.stream_load import run as stream_run

BEDROCK_MODEL = "bedrock/amazon.nova-lite-v1:0"
# Streams of 20 words, one chunk each, 10 ms apart at the upstream.
STREAM_PROMPT = "[[fake:words=20]] [[fake:chunk_delay_ms=10]] stream"

# A ~1 KB chat request, like the ones the targets were set for.
SYSTEM = "You are a helpful assistant. " * 30
WRK_SCRIPT = r"""
local counter = 0
local unique = os.getenv("BENCH_UNIQUE") == "1"
local prefix = os.getenv("BENCH_PREFIX") or "p"
local system = os.getenv("BENCH_SYSTEM") or ""
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local messages_api = os.getenv("BENCH_API") == "messages"
local embeddings_api = os.getenv("BENCH_API") == "embeddings"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_KEY") or "x")
if messages_api then wrk.headers["anthropic-version"] = "2023-06-01" end
local function body(n)
  if embeddings_api then
    return '{"model":"' .. model .. '","input":"benchmark ' .. prefix .. ' ' .. n ..
           '","encoding_format":"base64"}'
  end
  if messages_api then
    return '{"model":"' .. model .. '","max_tokens":256,"system":"' .. system ..
           '","messages":[{"role":"user","content":"benchmark ' .. prefix .. ' ' .. n ..
           '"}],"temperature":0}'
  end
  return '{"model":"' .. model .. '","messages":[{"role":"system","content":"' .. system ..
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
    """Resident memory of a process and its children (a front group's parent and its fronts)."""
    total = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        total += rss_mb(int(child))
    return total


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


def miss_stack(stack: DevStack) -> tuple[str, str, Path]:
    """Start in `stack` redis-server, the fake upstream, one worker and one ready front; return
    (gateway URL, direct upstream URL, wrk script): what the miss-path scripts in ops/ share."""
    script = Path(tempfile.mkdtemp(prefix="edge-bench-")) / "chat.lua"
    script.write_text(WRK_SCRIPT)
    stack.start_redis()
    stack.start_upstream()
    stack.start_worker("openai")
    front = stack.start_front(wait_path="/health/ready")
    return f"{front.url}/v1/chat/completions", f"{stack.upstream_url}/v1/chat/completions", script


def median(runs: list[Run], attr: str) -> float:
    """The median of the runs; NaN for a scenario left out (--only), shown as such."""
    return statistics.median(getattr(r, attr) for r in runs) if runs else float("nan")


SCENARIOS = ("l1", "miss1", "bedrock", "keyed", "miss64", "stream")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument(
        "--messages",
        action="store_true",
        help="only the miss at c=1 of /v1/messages (to an Anthropic and an OpenAI upstream) next to "
        "chat completions', runs alternating",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="only the miss at c=1 of /v1/embeddings next to chat completions', runs alternating",
    )
    parser.add_argument(
        "--portkey",
        action="store_true",
        help="only the miss at c=1 and c=64 next to Portkey's direct proxying, rounds alternating "
        "(installs Portkey with npm on first use: ops/peer_bench.py)",
    )
    parser.add_argument("--front-processes", type=int, default=1, help="front processes on the port")
    parser.add_argument(
        "--multiprocess-metrics",
        action="store_true",
        help="one front, prometheus-client multiprocess mode on",
    )
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help="scenarios to run: " + ",".join(SCENARIOS)
    )
    parser.add_argument(
        "--providers",
        nargs="?",
        const="openai,anthropic,gemini,azure",
        help="only each provider's miss path, a row per provider (comma-separated; default all)",
    )
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SCENARIOS):
        parser.error(f"--only: unknown {sorted(only - set(SCENARIOS))}")
    if not shutil.which("wrk"):
        raise SystemExit("bench: wrk not found; install it (Debian: apt-get install wrk)")
    if args.providers:
        from ops.provider_bench import run as provider_run

        provider_run(args.providers.split(","), args.runs, args.duration)
        return
    if args.messages:
        from ops.endpoint_bench import messages_bench

        messages_bench(args.runs, args.duration)
        return
    if args.portkey:
        from ops.peer_bench import portkey_bench

        portkey_bench(args.runs, args.duration)
        return
    if args.embeddings:
        from ops.endpoint_bench import embeddings_bench

        embeddings_bench(args.runs, args.duration)
        return

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    script = tmp / "chat.lua"
    script.write_text(WRK_SCRIPT)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        stack.start_redis()
        stack.start_upstream()
        if "bedrock" in only:
            stack.env_overrides.update({**stack.bedrock_env, **FAKE_BEDROCK})
        worker = stack.start_worker("openai")
        if "bedrock" in only:
            stack.start_worker("bedrock")
        front_env = {**stack.env, "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics")}
        (tmp / "metrics").mkdir()
        front = stack.start_front(
            front_env if args.multiprocess_metrics else None,
            wait_path="/health/ready",
            processes=args.front_processes,
        )
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
        # Warm up: connections, L1 entry for the fixed body (one per front process: each has its
        # own L1, and the kernel places each new connection on one of them).
        wrk(gateway, 8, 2, script, {**base_env, "BENCH_UNIQUE": "1", "BENCH_PREFIX": "warm"})
        for key in (MASTER_KEY, virtual):
            for _ in range(4 * args.front_processes):
                _post(gateway, key, FIXED_BODY)

        l1 = scenario(gateway, 32, False, "l1") if "l1" in only else []
        if "bedrock" in only:  # both providers' upstream work alike: the fake skips its AWS checks
            _post(f"{stack.upstream_url}/_fake/config", MASTER_KEY, {"aws_checks": False})
        miss1, bedrock_miss1 = [], []
        for i in range(args.runs):  # alternating: the machine's drift hits both alike
            env = {**base_env, "BENCH_UNIQUE": "1", "BENCH_PREFIX": f"m1-{i}"}
            if "miss1" in only:
                miss1.append(wrk(gateway, 1, d, script, env))
            if "bedrock" in only:
                bedrock_miss1.append(wrk(gateway, 1, d, script, {**env, "BENCH_MODEL": BEDROCK_MODEL}))
        base_env = {**base_env, "BENCH_KEY": virtual}
        keyed_l1 = scenario(gateway, 32, False, "kl1") if "keyed" in only else []
        keyed_miss1 = scenario(gateway, 1, True, "km1") if "keyed" in only else []
        base_env = {**base_env, "BENCH_KEY": MASTER_KEY}
        direct1 = scenario(direct, 1, True, "d1") if only & {"miss1", "bedrock", "keyed"} else []
        miss64 = scenario(gateway, 64, True, "m64") if "miss64" in only else []
        direct64 = scenario(direct, 64, True, "d64") if "miss64" in only else []

        def streams(url: str, c: int) -> list[StreamStats]:
            if "stream" not in only:
                return []
            return [stream_run(url, MASTER_KEY, c, d, STREAM_PROMPT) for _ in range(args.runs)]

        stream1, stream_direct1 = streams(gateway, 1), streams(direct, 1)
        stream64, stream_direct64 = streams(gateway, 64), streams(direct, 64)
        front_rss, worker_rss = rss_mb(front.process.pid), rss_mb(worker.pid)
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    errors = sum(r.errors for r in l1 + miss1 + bedrock_miss1 + miss64)
    errors += sum(s.errors for s in stream1 + stream64)

    def added(gw: list[StreamStats], direct: list[StreamStats], attr: str) -> float:
        if not gw:
            return float("nan")
        gateway_median = statistics.median(getattr(s, attr) for s in gw)
        return gateway_median - statistics.median(getattr(s, attr) for s in direct)

    rows = [
        ("L1 hit, c=32: requests/s", median(l1, "rps"), ">= 8000"),
        ("L1 hit, c=32: p50 ms", median(l1, "p50_ms"), ""),
        ("L1 hit, c=32: p99 ms", median(l1, "p99_ms"), "<= 5"),
        ("miss, c=1: added p50 ms", median(miss1, "p50_ms") - median(direct1, "p50_ms"), "<= 2.5"),
        ("miss, c=1: added p99 ms", median(miss1, "p99_ms") - median(direct1, "p99_ms"), "<= 6"),
        (
            "bedrock miss, c=1: added p50 ms",
            median(bedrock_miss1, "p50_ms") - median(direct1, "p50_ms"),
            "<= openai's + 10 %",
        ),
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
        ("front RSS MB (every front process)", front_rss, "<= 120 per process"),
        ("worker RSS MB", worker_rss, "<= 120"),
    ]
    mode = f"{args.front_processes} front process(es)" + (
        ", multiprocess metrics" if args.multiprocess_metrics else ""
    )
    print(
        f"\n{args.runs} runs of {args.duration} s each, medians, {mode}; non-2xx or socket errors: {errors}\n"
    )
    print("| measure | value | target |\n|---|---:|---|")
    for name, value, target in rows:
        if value == value:  # not NaN: the scenario ran
            print(f"| {name} | {value:,.2f} | {target} |")


if __name__ == "__main__":
    main()
