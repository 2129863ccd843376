"""A virtual key's cost on a miss, measured the only way this noisy machine allows: one stack,
master-key and keyed misses alternating, the difference taken pair by pair.

    .venv/bin/python ops/keyed_bench.py [--pairs 15] [--key rpm|parallel|tpm|budget|full]

`./edge bench` has the same rows, but its runs are minutes apart, and on two shared cores a
full-table run drifts by more than the difference being measured.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.bench import FIXED_BODY, SYSTEM, _post, miss_stack, wrk

LIMITS = {
    "rpm": {"rpm_limit": 10**9},
    "parallel": {"rpm_limit": 10**9, "max_parallel_requests": 10**6},
    "tpm": {"rpm_limit": 10**9, "tpm_limit": 10**12},
    "budget": {"rpm_limit": 10**9, "max_budget": 10**6},
    "full": {"rpm_limit": 10**9, "tpm_limit": 10**12, "max_budget": 10**6},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--key", choices=sorted(LIMITS), default="full")
    args = parser.parse_args()
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        gateway, direct, script = miss_stack(stack)
        spec = {"key_alias": "bench", **LIMITS[args.key]}
        virtual = str(
            _post(gateway.replace("/v1/chat/completions", "/key/generate"), MASTER_KEY, spec)["key"]
        )
        env = {**stack.env, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1"}
        for key in (MASTER_KEY, virtual):  # connections, the key's lazy loads, caches
            _post(gateway, key, FIXED_BODY)
            wrk(gateway, 4, 2, script, {**env, "BENCH_KEY": key, "BENCH_PREFIX": "warm" + key[-4:]})
        master, keyed = [], []
        for i in range(args.pairs):
            base = wrk(direct, 1, 2, script, {**env, "BENCH_KEY": MASTER_KEY, "BENCH_PREFIX": f"d{i}"}).p50_ms
            master.append(
                wrk(gateway, 1, 2, script, {**env, "BENCH_KEY": MASTER_KEY, "BENCH_PREFIX": f"m{i}"}).p50_ms
                - base
            )
            keyed.append(
                wrk(gateway, 1, 2, script, {**env, "BENCH_KEY": virtual, "BENCH_PREFIX": f"k{i}"}).p50_ms
                - base
            )
        deltas = [k - m for m, k in zip(master, keyed, strict=True)]
        print(f"key with {args.key} limits, {args.pairs} pairs, miss c=1, added p50 ms")
        print("  master:", [round(x, 2) for x in master], "median", round(statistics.median(master), 2))
        print("  keyed: ", [round(x, 2) for x in keyed], "median", round(statistics.median(keyed), 2))
        print(
            "  keyed - master:", [round(x, 2) for x in deltas], "median", round(statistics.median(deltas), 2)
        )
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
