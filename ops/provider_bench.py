"""Each provider's miss path against the fake upstream: added p50 latency at one connection,
gateway minus the same provider's API called directly, per provider.

    ./edge bench --providers [openai,anthropic,gemini,azure] [--runs 5] [--duration 3]

One stack serves a model per provider (one worker pool each). Runs alternate gateway and
direct, provider after provider, so the machine's drift hits every row alike; each row is the
median of the run-by-run differences, and the last column its ratio to the OpenAI row (the
adapters' translation is the difference: the queue, the front and the publication are the same).
"""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.bench import SYSTEM, wrk

CONFIG = """\
model_list:
  - {model_name: bench-openai, provider: openai, model: gpt-4o-mini}
  - {model_name: bench-anthropic, provider: anthropic, model: claude-3-5-haiku-latest}
  - {model_name: bench-gemini, provider: gemini, model: gemini-2.5-flash}
  - {model_name: bench-azure, provider: azure, model: gpt-4o-mini}
"""
ALL = ("openai", "anthropic", "gemini", "azure")

# One script for every wire format: BENCH_KIND picks the body, BENCH_HEADERS ("a=b;c=d") the
# auth and version headers, so the direct baseline sends what the worker would.
SCRIPT = r"""
local counter = 0
local kind = os.getenv("BENCH_KIND") or "openai"
local model = os.getenv("BENCH_MODEL") or "gpt-4o-mini"
local prefix = os.getenv("BENCH_PREFIX") or "p"
local system = os.getenv("BENCH_SYSTEM") or ""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
for name, value in string.gmatch(os.getenv("BENCH_HEADERS") or "", "([^=;]+)=([^;]*)") do
  wrk.headers[name] = value
end
local function body(n)
  local text = "benchmark " .. prefix .. " " .. n
  if kind == "gemini" then
    return '{"systemInstruction":{"parts":[{"text":"' .. system .. '"}]},"contents":[{"role":"user",' ..
           '"parts":[{"text":"' .. text .. '"}]}],"generationConfig":{"temperature":0}}'
  elseif kind == "anthropic" then
    return '{"model":"' .. model .. '","max_tokens":4096,"system":"' .. system ..
           '","messages":[{"role":"user","content":"' .. text .. '"}],"temperature":0}'
  end
  return '{"model":"' .. model .. '","messages":[{"role":"system","content":"' .. system ..
         '"},{"role":"user","content":"' .. text .. '"}],"temperature":0}'
end
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, body(tostring(math.random(1, 1e9)) .. "-" .. counter))
end
"""


def _direct(upstream: str, provider: str) -> tuple[str, str, str, str]:
    """(URL, body kind, model, headers) of a provider's own API on the fake upstream."""
    if provider == "gemini":
        url = f"{upstream}/v1beta/models/gemini-2.5-flash:generateContent"
        return url, "gemini", "", "x-goog-api-key=k"
    if provider == "anthropic":
        return (
            f"{upstream}/v1/messages",
            "anthropic",
            "claude-3-5-haiku-latest",
            "x-api-key=k;anthropic-version=2023-06-01",
        )
    if provider == "azure":
        url = f"{upstream}/openai/deployments/gpt-4o-mini/chat/completions?api-version=2024-10-21"
        return url, "openai", "gpt-4o-mini", "api-key=k"
    return f"{upstream}/v1/chat/completions", "openai", "gpt-4o-mini", "Authorization=Bearer k"


def run(providers: list[str], runs: int, duration: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="edge-provider-bench-"))
    script = tmp / "provider.lua"
    script.write_text(SCRIPT)
    config = tmp / "models.yaml"
    config.write_text(CONFIG)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING", "EDGE_CONFIG": str(config)})
    added: dict[str, list[float]] = {p: [] for p in providers}
    try:
        stack.start_redis()
        stack.start_upstream()
        for provider in providers:
            stack.start_worker(provider)
        front = stack.start_front()
        gateway = f"{front.url}/v1/chat/completions"
        env = {**stack.env, "BENCH_SYSTEM": SYSTEM}
        gateway_env = {**env, "BENCH_KIND": "openai", "BENCH_HEADERS": f"Authorization=Bearer {MASTER_KEY}"}
        for provider in providers:  # warm up: connections, pools, each adapter's first call
            wrk(
                gateway,
                2,
                1,
                script,
                {**gateway_env, "BENCH_MODEL": f"bench-{provider}", "BENCH_PREFIX": "w"},
            )
        for i in range(runs):
            for provider in providers:
                url, kind, model, headers = _direct(stack.upstream_url, provider)
                direct_env = {**env, "BENCH_KIND": kind, "BENCH_MODEL": model, "BENCH_HEADERS": headers}
                base = wrk(url, 1, duration, script, {**direct_env, "BENCH_PREFIX": f"d{i}"})
                through = wrk(
                    gateway,
                    1,
                    duration,
                    script,
                    {**gateway_env, "BENCH_MODEL": f"bench-{provider}", "BENCH_PREFIX": f"g{i}"},
                )
                if base.errors or through.errors:
                    raise SystemExit(f"bench: {provider}: {base.errors + through.errors} failed requests")
                added[provider].append(through.p50_ms - base.p50_ms)
    finally:
        stack.stop()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\n{runs} alternating runs of {duration} s per provider, c=1; load average after: {load}\n")
    print("| provider | miss, c=1: added p50 ms (median) | runs | vs openai |\n|---|---:|---|---:|")
    reference = statistics.median(added["openai"]) if "openai" in added else None
    for provider, values in added.items():
        value = statistics.median(values)
        ratio = f"{value / reference:.0%}" if reference else "—"
        print(f"| {provider} | {value:.2f} | {' '.join(f'{v:.2f}' for v in values)} | {ratio} |")
