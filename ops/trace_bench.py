"""What tracing costs a miss, pair by pair: a stack with tracing off and one with it on
(exporting OTLP/HTTP to a receiver in this process), the same upstream, c=1 misses alternating.

    .venv/bin/python ops/trace_bench.py [--pairs 15] [--duration 2] [--base DIR] [--on-env NAME=VALUE]

Each stack has its own Redis, worker and front (a worker must not take the other stack's jobs).
`--base DIR` adds a third stack running the code in DIR (say `git archive main | tar -x -C DIR`)
to compare "off" against code without any tracing hook; run the script from outside the
repository then (`cd /tmp && ...`), so the children import DIR's packages and not the working
tree's. Reports each stack's added p50 (minus direct to the upstream) and the pairwise deltas.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack
from edge_agent.otlp_sink import OtlpSink
from ops.bench import FIXED_BODY, SYSTEM, WRK_SCRIPT, _post, wrk


def _stack(upstream: DevStack | None, overrides: dict[str, str]) -> tuple[DevStack, str, list[int]]:
    """A Redis, an openai worker and a front (the url, the front's and worker's pids); the
    upstream of `upstream` (or its own)."""
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING", **overrides})
    stack.start_redis()
    if upstream is None:
        stack.start_upstream()
    else:
        stack.upstream_port = upstream.upstream_port
    stack.start_worker("openai")
    front = stack.start_front(wait_path="/health/ready")
    return stack, f"{front.url}/v1/chat/completions", [front.process.pid, stack.workers[0].pid]


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds the processes used so far (user + system, every thread: export included)."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--duration", type=int, default=2)
    parser.add_argument("--base", type=Path, help="a checkout without tracing, to compare 'off' against")
    parser.add_argument(
        "--on-env", action="append", default=[], metavar="NAME=VALUE", help="more environment for 'on'"
    )
    args = parser.parse_args()
    script = Path(tempfile.mkdtemp(prefix="edge-trace-bench-")) / "chat.lua"
    script.write_text(WRK_SCRIPT)
    sink = OtlpSink(keep=False).start()  # counts spans only: its CPU is the machine's too
    stacks: list[DevStack] = []
    try:
        off, off_url, off_pids = _stack(None, {})
        stacks.append(off)
        more = dict(item.split("=", 1) for item in args.on_env)
        on, on_url, on_pids = _stack(
            off, {"ENABLE_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, **more}
        )
        stacks.append(on)
        urls = {"off": off_url, "on": on_url}
        pids = {"off": off_pids, "on": on_pids}
        if args.base is not None:
            base, urls["base"], pids["base"] = _stack(off, {"PYTHONPATH": str(args.base.resolve())})
            stacks.append(base)
        direct = f"{off.upstream_url}/v1/chat/completions"
        env = {**os.environ, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1", "BENCH_KEY": MASTER_KEY}
        for name, url in urls.items():  # connections, lazy imports, caches
            _post(url, MASTER_KEY, FIXED_BODY)
            wrk(url, 4, 2, script, {**env, "BENCH_PREFIX": f"warm-{name}"})
        added: dict[str, list[float]] = {name: [] for name in urls}
        cpu_us: dict[str, list[float]] = {name: [] for name in urls}  # front + worker CPU per miss
        for i in range(args.pairs):
            floor = wrk(direct, 1, args.duration, script, {**env, "BENCH_PREFIX": f"d{i}"}).p50_ms
            order = list(urls) if i % 2 == 0 else list(reversed(urls))  # neither always goes first
            for name in order:
                used = _cpu_s(pids[name])
                run = wrk(urls[name], 1, args.duration, script, {**env, "BENCH_PREFIX": f"{name}{i}"})
                cpu_us[name].append((_cpu_s(pids[name]) - used) / (run.rps * args.duration) * 1e6)
                added[name].append(run.p50_ms - floor)
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"tracing, {args.pairs} pairs of {args.duration} s, miss c=1, added p50 ms; load {load}")
        for name, values in added.items():
            print(
                f"  {name:>4}:", [round(x, 2) for x in values], "median", round(statistics.median(values), 2)
            )
        for name, values in cpu_us.items():
            print(f"  {name:>4} CPU us per miss (front + worker):", round(statistics.median(values)))
        for a, b in (("on", "off"), ("off", "base")):
            if a in added and b in added:
                deltas = [x - y for x, y in zip(added[a], added[b], strict=True)]
                print(
                    f"  {a} - {b}:",
                    [round(x, 2) for x in deltas],
                    "median",
                    round(statistics.median(deltas), 3),
                )
        print(f"  spans received: {sink.counted} in {sink.requests} exports")
    finally:
        for stack in stacks:
            stack.stop()
        sink.stop()


if __name__ == "__main__":
    main()
