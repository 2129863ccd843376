"""The miss at c=1 of the endpoints besides chat completions, next to chat completions' own, in
one stack and alternating runs: `./edge bench --messages` (Anthropic's Messages API, to an
Anthropic upstream passed through and to an OpenAI one translated) and `./edge bench
--embeddings` (POST /v1/embeddings). Each gateway path is measured against the upstream's own
endpoint for it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edge_agent.devstack import MASTER_KEY, DevStack
from ops.bench import SYSTEM, WRK_SCRIPT, Run, median, wrk

Scenario = tuple[str, str, str, str, str]  # (name, "gw" or "up", URL path, BENCH_API, BENCH_MODEL)


def alternating(
    scenarios: list[Scenario], providers: list[str], runs: int, duration: int
) -> dict[str, list[Run]]:
    """Each scenario's miss at c=1, `runs` times, each round starting one scenario later (the
    machine drifts more between scenarios run apart than these differ), against one stack with a
    worker per provider."""
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    stack = DevStack(env_overrides={"LOG_LEVEL": "WARNING"})
    results: dict[str, list[Run]] = {name: [] for name, *_ in scenarios}
    try:
        stack.start_redis()
        stack.start_upstream()
        for provider in providers:
            stack.start_worker(provider)
        front = stack.start_front(wait_path="/health/ready")
        hosts = {"gw": front.url, "up": stack.upstream_url}
        base_env = {**stack.env, "BENCH_KEY": MASTER_KEY, "BENCH_SYSTEM": SYSTEM, "BENCH_UNIQUE": "1"}
        for _, where, path, api, model in scenarios:  # warm up every path
            env = {**base_env, "BENCH_API": api, "BENCH_MODEL": model, "BENCH_PREFIX": "warm"}
            wrk(hosts[where] + path, 4, 1, script, env)
        for i in range(runs):
            for name, where, path, api, model in (
                scenarios[i % len(scenarios) :] + scenarios[: i % len(scenarios)]
            ):
                env = {**base_env, "BENCH_API": api, "BENCH_MODEL": model, "BENCH_PREFIX": f"r{i}"}
                results[name].append(wrk(hosts[where] + path, 1, duration, script, env))
    finally:
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def print_rows(
    results: dict[str, list[Run]], rows: list[tuple[str, float]], runs: int, duration: int
) -> None:
    errors = sum(r.errors for rs in results.values() for r in rs)
    print(f"\n{runs} alternating runs of {duration} s each, medians; non-2xx or socket errors: {errors}\n")
    print("| measure | value |\n|---|---:|")
    for name, value in rows:
        print(f"| {name} | {value:,.2f} |")


CHAT_SCENARIOS: list[Scenario] = [
    ("chat completions -> OpenAI", "gw", "/v1/chat/completions", "chat", "gpt-4o-mini"),
    ("direct OpenAI chat completions", "up", "/v1/chat/completions", "chat", "gpt-4o-mini"),
]


def messages_bench(runs: int, duration: int) -> None:
    """Anthropic's Messages API against chat completions: the miss at c=1, added over the
    upstream's own endpoint."""
    claude = "claude-3-5-haiku-latest"
    scenarios = [
        *CHAT_SCENARIOS,
        ("messages -> Anthropic (passthrough)", "gw", "/v1/messages", "messages", claude),
        ("direct Anthropic messages", "up", "/v1/messages", "messages", claude),
        ("messages -> OpenAI (translated)", "gw", "/v1/messages", "messages", "gpt-4o-mini"),
    ]
    results = alternating(scenarios, ["openai", "anthropic"], runs, duration)

    def p50(name: str) -> float:
        return median(results[name], "p50_ms")

    chat_direct, messages_direct = p50("direct OpenAI chat completions"), p50("direct Anthropic messages")
    rows = [
        ("chat completions miss, c=1: added p50 ms", p50("chat completions -> OpenAI") - chat_direct),
        (
            "/v1/messages miss to Anthropic, c=1: added p50 ms",
            p50("messages -> Anthropic (passthrough)") - messages_direct,
        ),
        (
            "/v1/messages miss to OpenAI (translated), c=1: added p50 ms",
            p50("messages -> OpenAI (translated)") - chat_direct,
        ),
        ("direct chat completions, c=1: p50 ms", chat_direct),
        ("direct messages, c=1: p50 ms", messages_direct),
    ]
    print_rows(results, rows, runs, duration)


def embeddings_bench(runs: int, duration: int) -> None:
    """/v1/embeddings against chat completions: the miss at c=1, added over the upstream's own
    endpoint."""
    model = "text-embedding-3-small"
    scenarios = [
        *CHAT_SCENARIOS,
        ("embeddings -> OpenAI", "gw", "/v1/embeddings", "embeddings", model),
        ("direct OpenAI embeddings", "up", "/v1/embeddings", "embeddings", model),
    ]
    results = alternating(scenarios, ["openai"], runs, duration)

    def added(gateway: str, direct: str, attr: str) -> float:
        return median(results[gateway], attr) - median(results[direct], attr)

    chat = ("chat completions -> OpenAI", "direct OpenAI chat completions")
    embeddings = ("embeddings -> OpenAI", "direct OpenAI embeddings")
    rows = [
        ("chat completions miss, c=1: added p50 ms", added(*chat, "p50_ms")),
        ("embeddings miss, c=1: added p50 ms", added(*embeddings, "p50_ms")),
        ("chat completions miss, c=1: added p99 ms", added(*chat, "p99_ms")),
        ("embeddings miss, c=1: added p99 ms", added(*embeddings, "p99_ms")),
        ("direct chat completions, c=1: p50 ms", median(results[chat[1]], "p50_ms")),
        ("direct embeddings, c=1: p50 ms", median(results[embeddings[1]], "p50_ms")),
    ]
    print_rows(results, rows, runs, duration)
