"""The Bedrock provider's cost, measured two ways:

    .venv/bin/python ops/bedrock_bench.py [--pairs 15] [--sign-only]

- SigV4 signing per request, in-process: µs per `bedrock_auth.sign` (awscrt's signer on a
  ~1 KB Converse body), per whole `build_request` (mapping, encoding,
  signing), and the OpenAI adapter's `build_request` for comparison;
- the miss path at 1 connection, round by round: each provider's added latency is its gateway
  miss minus a request sent straight to the same fake API (a Converse body to
  `/model/<id>/converse` for Bedrock: the fake's signature and body checks are switched off, so
  it needs no signature). In each round the two direct runs come first, then the gateway runs in
  ABBA order (BAAB the next round), so both providers see the same machine drift and neither
  always runs right after the idle gateway of a direct run: that first run measured up to
  0.15 ms slower, by a different amount per provider (2026-12-04).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_agent.devstack import MASTER_KEY, DevStack
from edge_agent.embedded import FAKE_BEDROCK
from edge_agent.fake_upstream.aws import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from ops.bench import BEDROCK_MODEL, FIXED_BODY, SYSTEM, WRK_SCRIPT, _post, wrk

# The same request as WRK_SCRIPT's, in Converse's shape, for the direct Bedrock baseline.
CONVERSE_SCRIPT = r"""
local counter = 0
local system = os.getenv("BENCH_SYSTEM") or ""
local prefix = os.getenv("BENCH_PREFIX") or "p"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = '{"messages":[{"role":"user","content":[{"text":"benchmark ' .. prefix .. ' ' ..
    math.random(1, 1e9) .. '-' .. counter .. '"}]}],"system":[{"text":"' .. system ..
    '"}],"inferenceConfig":{"temperature":0}}'
  return wrk.format(nil, nil, nil, body)
end
"""


def per_call_us(fn: Callable[[], object], n: int = 50, rounds: int = 200) -> tuple[float, float]:
    """(best, median) CPU µs per call over `rounds` rounds of `n` calls, after a warm-up. CPU
    time, not wall time: on a shared machine the wall clock mostly measures the neighbours."""
    for _ in range(200):
        fn()
    times = []
    for _ in range(rounds):
        started = time.process_time_ns()
        for _ in range(n):
            fn()
        times.append((time.process_time_ns() - started) / n / 1000)
    return min(times), statistics.median(times)


def signing() -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID=FAKE_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY=FAKE_SECRET_ACCESS_KEY,
        AWS_CONFIG_FILE="/nonexistent",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent",
        AWS_EC2_METADATA_DISABLED="true",
    )
    from edge_workers.providers.bedrock import BedrockAdapter, model_url
    from edge_workers.providers.bedrock_auth import sign
    from edge_workers.providers.openai import OpenAIAdapter
    from shared.config import Deployment

    model = "amazon.nova-lite-v1:0"
    endpoint = "https://bedrock-runtime.us-east-1.amazonaws.com"
    bedrock = Deployment("m", "bedrock", model, endpoint, "AWS_ACCESS_KEY_ID", id="m#0", region="us-east-1")
    openai = Deployment("m", "openai", "gpt-4o-mini", "https://api.openai.com/v1", "OPENAI_API_KEY", id="o#0")
    body = FIXED_BODY
    url = model_url(bedrock, model, "converse")
    payload = b"x" * 1100
    rows = [
        (
            "sign (awscrt's SigV4 signer)",
            lambda: sign(bedrock, url, payload, {"Content-Type": "x"}),
        ),
        (
            "bedrock build_request (map + encode + sign)",
            lambda: BedrockAdapter().build_request(body, model, bedrock, ""),
        ),
        ("openai build_request", lambda: OpenAIAdapter().build_request(body, "gpt-4o-mini", openai, "k")),
    ]
    print(f"load average {os.getloadavg()[0]:.2f}")
    for name, fn in rows:
        best, median = per_call_us(fn)
        print(f"  {name}: best {best:.1f} µs, median {median:.1f} µs of CPU")


def pairs(count: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="edge-bedrock-"))
    script, converse = folder / "chat.lua", folder / "converse.lua"
    script.write_text(WRK_SCRIPT)
    converse.write_text(CONVERSE_SCRIPT)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    try:
        stack.start_redis()
        stack.start_upstream()
        stack.env_overrides.update({**stack.bedrock_env, **FAKE_BEDROCK})
        stack.start_worker("openai")
        stack.start_worker("bedrock")
        front = stack.start_front()
        _post(f"{stack.upstream_url}/_fake/config", MASTER_KEY, {"aws_checks": False})
        gateway = f"{front.url}/v1/chat/completions"
        direct = f"{stack.upstream_url}/v1/chat/completions"
        direct_bedrock = f"{stack.upstream_url}/model/{BEDROCK_MODEL.removeprefix('bedrock/')}/converse"
        env = {**stack.env, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1", "BENCH_KEY": MASTER_KEY}
        for model in ("gpt-4o-mini", BEDROCK_MODEL):  # connections, pools, lazy imports
            wrk(gateway, 4, 2, script, {**env, "BENCH_MODEL": model, "BENCH_PREFIX": "warm" + model})
        openai, bedrock = [], []
        for i in range(count):
            base = wrk(direct, 1, 2, script, {**env, "BENCH_PREFIX": f"d{i}"}).p50_ms
            straight = wrk(direct_bedrock, 1, 2, converse, {**env, "BENCH_PREFIX": f"db{i}"})
            assert straight.errors == 0, "the fake refused the direct Converse requests"
            runs: dict[str, list[float]] = {"gpt-4o-mini": [], BEDROCK_MODEL: []}
            order = list(runs) if i % 2 == 0 else list(reversed(runs))
            for k, model in enumerate([*order, *reversed(order)]):  # ABBA, then BAAB
                run = wrk(gateway, 1, 2, script, {**env, "BENCH_MODEL": model, "BENCH_PREFIX": f"g{i}-{k}"})
                runs[model].append(run.p50_ms)
            openai.append(statistics.mean(runs["gpt-4o-mini"]) - base)
            bedrock.append(statistics.mean(runs[BEDROCK_MODEL]) - straight.p50_ms)
        deltas = [b - o for o, b in zip(openai, bedrock, strict=True)]
        print(f"miss c=1, added p50 ms, {count} rounds; load average {os.getloadavg()[0]:.2f}")
        print("  openai: ", [round(x, 2) for x in openai], "median", round(statistics.median(openai), 2))
        print("  bedrock:", [round(x, 2) for x in bedrock], "median", round(statistics.median(bedrock), 2))
        print(
            "  bedrock - openai:",
            [round(x, 2) for x in deltas],
            "median",
            round(statistics.median(deltas), 2),
        )
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--sign-only", action="store_true", help="only the in-process signing cost")
    args = parser.parse_args()
    signing()
    if not args.sign_only:
        pairs(args.pairs)


if __name__ == "__main__":
    main()
