"""`edge-agent config check FILE`: what a config file would serve, and whether the gateway starts.

Exit status: 0 if the gateway would start with this file and this environment; 1 if it would
refuse (a refusal, or warnings under --strict); the output says why, for a human to read.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import TextIO

from shared.config import ConfigError, Deployment, LoadedConfig, read_config
from shared.routing import RouterSettings
from shared.semantic_config import group_settings


def _key(d: Deployment, env: Mapping[str, str]) -> str:
    if d.api_key:
        return "key written in the file"
    return f"key ${d.api_key_env} ({'set' if env.get(d.api_key_env) else 'NOT SET'})"


def _limits(d: Deployment) -> str:
    parts = [f"priority {d.priority}", f"weight {d.weight:g}"]
    for label, value in (("rpm", d.rpm), ("tpm", d.tpm)):
        if value is not None:
            parts.append(f"{label} {value}")
    if d.timeout_s is not None:
        parts.append(f"timeout {d.timeout_s:g}s")
    if d.stream_timeout_s is not None:
        parts.append(f"stream timeout {d.stream_timeout_s:g}s")
    if d.input_cost_per_1m or d.output_cost_per_1m:
        parts.append(f"cost/1M in {d.input_cost_per_1m:g} out {d.output_cost_per_1m:g}")
    return ", ".join(parts)


def _routing(router: RouterSettings) -> list[str]:
    retry, breaker = router.retry, router.breaker
    lines = [f"strategy: {router.routing_strategy}"]
    lines += [f"strategy for {group}: {s}" for group, s in router.group_strategies.items()]
    lines += [f"fallbacks: {group} -> {', '.join(t)}" for group, t in router.fallbacks.items()]
    lines += [
        f"context-window fallbacks: {group} -> {', '.join(t)}"
        for group, t in router.context_window_fallbacks.items()
    ]
    lines.append(
        f"retry: up to {retry.max_attempts} attempts, backoff {retry.initial_backoff_ms:g}..."
        f"{retry.max_backoff_ms:g} ms (at least {retry.min_backoff_ms:g} ms)"
    )
    lines.append(
        f"breaker: opens after {breaker.failures} failures in {breaker.window_s:g}s, "
        f"cools down {breaker.cooldown_s:g}s"
    )
    return lines


def report(path: str, strict: bool, env: Mapping[str, str], out: TextIO) -> int:
    try:
        loaded: LoadedConfig = read_config(path, env)
    except ConfigError as e:
        print(f"error: {e}", file=out)
        print("result: the gateway would NOT start", file=out)
        return 1
    lookup = {**loaded.settings.environment, **env}  # the file's variables fill gaps only
    groups: dict[str, list[Deployment]] = {}
    for d in loaded.deployments:
        groups.setdefault(d.model_name, []).append(d)
    print(f"{path}: {len(groups)} models, {len(loaded.deployments)} deployments", file=out)
    for name, deployments in groups.items():
        print(f"  {name}", file=out)
        for d in deployments:
            print(f"    -> {d.provider} {d.model} at {d.base_url}; {_key(d, lookup)}; {_limits(d)}", file=out)
    print("routing:", file=out)
    for line in _routing(loaded.router):
        print(f"  {line}", file=out)
    for group, s in sorted(group_settings(loaded.deployments, loaded.router.semantic_cache).items()):
        print(
            f"  semantic cache for {group}: {s.mode}, threshold {s.threshold:g}, "
            f"messages up to {s.max_chars} characters (workers need `edge-agent semantic fetch`)",
            file=out,
        )
    file_settings = loaded.settings
    print("settings from the file (an environment variable set wins):", file=out)
    for label, value in (
        ("master key", "set" if file_settings.master_key else None),
        ("request timeout (s)", file_settings.request_timeout_s),
        ("L2 cache", file_settings.enable_l2_cache),
        ("L2 ttl (s)", file_settings.l2_ttl_s),
        ("L1 ttl (s)", file_settings.l1_ttl_s),
    ):
        if value is not None:
            print(f"  {label}: {value}", file=out)
    refusals = []
    if not env.get("EDGE_MASTER_KEY") and not file_settings.master_key:
        refusals.append("no master key: set EDGE_MASTER_KEY or general_settings.master_key")
    print(f"warnings ({len(loaded.warnings)}):", file=out)
    for warning in loaded.warnings:
        print(f"  {warning}", file=out)
    if strict and loaded.warnings:
        refusals.append(f"--strict: {len(loaded.warnings)} warnings")
    for refusal in refusals:
        print(f"error: {refusal}", file=out)
    print(f"result: the gateway would {'NOT start' if refusals else 'start'}", file=out)
    return 1 if refusals else 0


def main(path: str, strict: bool) -> None:
    strict = strict or os.environ.get("EDGE_CONFIG_STRICT", "").lower() in ("1", "true", "yes", "on")
    raise SystemExit(report(path, strict, os.environ, sys.stdout))
