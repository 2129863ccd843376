"""`edge-agent keys create|list|info|update|block|unblock|delete`: the admin API's operations
from the command line, straight to Redis (REDIS_URL) through the same functions the API uses
(shared/keys.py). Prints JSON; a made key is printed once and never again."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared import keys
from shared.keys import KeyError_

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"

# flag -> (record field, parser); the record's own validation (KeySpec) judges the values.
_SETTINGS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "--alias": ("key_alias", str),
    "--models": ("models", lambda s: [m.strip() for m in s.split(",") if m.strip()]),
    "--rpm-limit": ("rpm_limit", int),
    "--tpm-limit": ("tpm_limit", int),
    "--max-parallel-requests": ("max_parallel_requests", int),
    "--max-budget": ("max_budget", float),
    "--budget-duration": ("budget_duration", str),
    "--expires": ("expires", str),
    "--cache-namespace": ("cache_namespace", str),
    "--metadata": ("metadata", json.loads),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="keys_command", required=True)
    create = sub.add_parser("create", help="make a key (printed once)")
    update = sub.add_parser("update", help="change a key's settings")
    update.add_argument("key", help="the key or its key_id")
    for command in (create, update):
        for flag, (field, parse) in _SETTINGS.items():
            command.add_argument(flag, dest=field, type=parse, help=f"the record's {field}")
    listing = sub.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--size", type=int, default=100)
    for name in ("info", "block", "unblock", "delete"):
        sub.add_parser(name, help=f"{name} a key").add_argument("key", help="the key or its key_id")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {
        field: getattr(args, field) for field, _ in _SETTINGS.values() if getattr(args, field) is not None
    }


async def _run(args: argparse.Namespace, redis: Redis) -> object:
    command = args.keys_command
    if command == "create":
        key, record = await keys.create_key(redis, keys.spec_from(_settings(args)))
        return {"key": key, **msgspec.to_builtins(record)}
    if command == "update":
        return await keys.update_key(redis, args.key, _settings(args))
    if command in ("block", "unblock"):
        return await keys.update_key(redis, args.key, {"blocked": command == "block"})
    if command == "info":
        info = await keys.key_info(redis, args.key)
        return {"key": info.key_id, "info": info}
    if command == "delete":
        return {"deleted_keys": [await keys.delete_key(redis, args.key)]}
    total, records = await keys.list_keys(redis, args.page, args.size)
    return {"keys": records, "total_count": total, "current_page": args.page}


def main(args: argparse.Namespace) -> None:
    async def run() -> object:
        redis = Redis.from_url(os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL, socket_connect_timeout=5)
        try:
            return await _run(args, redis)
        finally:
            await redis.aclose()

    try:
        result = asyncio.run(run())
    except KeyError_ as e:
        print(f"edge-agent: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except (RedisError, OSError) as e:
        print(f"edge-agent: Redis at REDIS_URL is unavailable ({type(e).__name__})", file=sys.stderr)
        raise SystemExit(2) from None
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(result)).decode() + "\n")
