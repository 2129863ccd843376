"""This checkout against another one (say, main before a change), alternating, on the miss path.

    .venv/bin/python ops/ab_bench.py --base ../wt-base [--rounds 5] [--duration 3]

On two shared, noisy cores a full `./edge bench` table drifts by more than most changes move
it; runs of the two versions taken alternately, each round starting a fresh stack of its own
version (redis-server, fake upstream, one worker, one front), drift together. Reported per
version: the medians over rounds of the miss's added p50 at c=1 (gateway minus direct to the
upstream, same round), of miss requests/s at c=64 and of L1-hit requests/s at c=32. The base
checkout needs its own `.venv` (`./edge lint` there makes it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def measure(tree: Path, duration: int) -> dict[str, float]:
    """One round of the checkout `tree` (run by its own venv): started fresh, measured, stopped."""
    sys.path.insert(0, str(tree))
    from edge_agent.devstack import MASTER_KEY, DevStack
    from ops.bench import FIXED_BODY, SYSTEM, WRK_SCRIPT, _post, wrk

    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        # Not ops.bench.miss_stack: the base checkout may predate it.
        stack.start_redis()
        stack.start_upstream()
        stack.start_worker("openai")
        front = stack.start_front(wait_path="/health/ready")
        gateway = f"{front.url}/v1/chat/completions"
        direct = f"{stack.upstream_url}/v1/chat/completions"
        script = Path(tempfile.mkdtemp(prefix="edge-ab-")) / "chat.lua"
        script.write_text(WRK_SCRIPT)
        env = {**stack.env, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1", "BENCH_KEY": MASTER_KEY}
        _post(gateway, MASTER_KEY, FIXED_BODY)
        wrk(gateway, 4, 1, script, {**env, "BENCH_PREFIX": "warm"})
        base = wrk(direct, 1, duration, script, {**env, "BENCH_PREFIX": "d"}).p50_ms
        added = wrk(gateway, 1, duration, script, {**env, "BENCH_PREFIX": "g1"}).p50_ms - base
        busy = wrk(gateway, 64, duration, script, {**env, "BENCH_PREFIX": "g64"})
        # The L1-hit path: one cached body, as ./edge bench's first row.
        l1 = wrk(gateway, 32, duration, script, {**env, "BENCH_UNIQUE": "0", "BENCH_PREFIX": "l1"})
        return {"added_p50_ms": added, "rps_c64": busy.rps, "errors_c64": busy.errors, "l1_rps_c32": l1.rps}
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", type=Path, help="the other checkout (with its own .venv)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.duration)))
        return
    if args.base is None:
        parser.error("--base is required")
    trees = {"base": args.base.resolve(), "this": Path(__file__).resolve().parents[1]}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            out = subprocess.run(
                [
                    str(tree / ".venv/bin/python"),
                    __file__,
                    "--measure",
                    str(tree),
                    "--duration",
                    str(args.duration),
                ],
                cwd=tree,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            results[name].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {round_ + 1} {name}: {results[name][-1]}", flush=True)
    for name, runs in results.items():
        added = statistics.median(r["added_p50_ms"] for r in runs)
        rps = statistics.median(r["rps_c64"] for r in runs)
        l1 = statistics.median(r["l1_rps_c32"] for r in runs)
        print(
            f"{name}: miss c=1 added p50 {added:.2f} ms; miss c=64 {rps:.0f} req/s; "
            f"L1 hit c=32 {l1:.0f} req/s ({len(runs)} rounds)"
        )


if __name__ == "__main__":
    main()
