"""What one miss costs Redis: the commands each sequential miss sends, counted by Redis itself.

    .venv/bin/python ops/round_trips.py [--requests 200] [--stream]

Starts redis-server, the fake upstream, one worker and one front, sends `--requests` unique
misses one after another (the master key, so no key limits), and prints `INFO commandstats`
calls per miss (background work such as heartbeats and refreshes included: at one request at a
time it is a few per cent of the total). Round trips are fewer than commands: a pipeline or a
script is one round trip however many commands it holds (README, "Performance").
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.bench import miss_stack


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--stream", action="store_true", help="streamed misses (20 chunks each)")
    args = parser.parse_args()
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        gateway, _, _ = miss_stack(stack)
        assert stack.redis is not None
        r = redis.Redis.from_url(stack.redis.url)
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        with httpx.Client(headers=headers, timeout=30) as http:

            def ask(text: str) -> None:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
                if args.stream:
                    body["stream"] = True
                    text += " [[fake:words=20]]"
                    body["messages"] = [{"role": "user", "content": text}]
                http.post(gateway, json=body).raise_for_status()

            ask("warm-up")
            r.config_resetstat()
            started = time.monotonic()
            for _ in range(args.requests):
                ask(f"round trips {uuid.uuid4()}")
            elapsed = time.monotonic() - started
        stats = r.info("commandstats")
        total = 0.0
        print(
            f"{args.requests} {'streamed ' if args.stream else ''}misses in {elapsed:.1f} s; "
            "Redis calls per miss:"
        )
        for name, values in sorted(stats.items(), key=lambda kv: -kv[1]["calls"]):
            per = values["calls"] / args.requests
            if name in ("cmdstat_config", "cmdstat_info"):
                continue
            total += per
            print(
                f"  {name.removeprefix('cmdstat_'):<14} {per:6.2f}   {values['usec_per_call']:6.1f} µs each"
            )
        print(f"  {'total':<14} {total:6.2f}")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
