"""`edge-agent cache warm FILE.jsonl`: send each chat request of FILE (one JSON body a line)
through the gateway, a bounded number at a time, so a deployment starts with a warm cache.

Each request goes through the normal path (its key's namespace, the model group's cache policy,
its own `cache` field), asked non-streamed: `stream` plays no part in the cache key, and a whole
answer is cheaper to read. A progress line is drawn on a terminal; the summary counts hits
(already cached), misses (now cached, or not cacheable by the policy) and errors, and the exit
status is 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

import aiohttp
import msgspec

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT_S = 600.0
MAX_REPORTED = 10  # errors shown one by one; the rest are only counted


@dataclass
class Summary:
    total: int = 0
    hits: int = 0
    misses: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.hits + self.misses + self.errors

    def failed(self, line: int, why: str) -> None:
        self.errors += 1
        if len(self.problems) < MAX_REPORTED:
            self.problems.append(f"line {line}: {why}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cache_command", required=True)
    warm = sub.add_parser(
        "warm", help="send every request of FILE.jsonl through the gateway (fills the cache)"
    )
    warm.add_argument("file", help="one chat completion request body (JSON) per line")
    warm.add_argument("--url", help=f"the gateway (env EDGE_URL, default {DEFAULT_URL})")
    warm.add_argument("--key", help="the key to send (env EDGE_MASTER_KEY); its namespace is warmed")
    warm.add_argument("--concurrency", type=int, default=8, help="requests at once (default 8)")


def main(args: argparse.Namespace) -> None:
    url = (args.url or os.environ.get("EDGE_URL") or DEFAULT_URL).rstrip("/")
    key = args.key or os.environ.get("EDGE_MASTER_KEY")
    if not key:
        sys.exit("edge-agent cache warm: no key (--key or EDGE_MASTER_KEY)")
    if args.concurrency < 1:
        sys.exit("edge-agent cache warm: --concurrency must be at least 1")
    try:
        with open(args.file, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        sys.exit(f"edge-agent cache warm: {args.file}: {e.strerror}")
    started = time.monotonic()
    summary = asyncio.run(warm(lines, url, key, args.concurrency, sys.stderr))
    elapsed = time.monotonic() - started
    for problem in summary.problems:
        print(problem, file=sys.stderr)
    if summary.errors > len(summary.problems):
        print(f"... and {summary.errors - len(summary.problems)} more errors", file=sys.stderr)
    print(
        f"warmed {summary.total} requests in {elapsed:.1f} s: "
        f"{summary.hits} hits, {summary.misses} misses, {summary.errors} errors"
    )
    if summary.errors:
        sys.exit(1)


async def warm(lines: list[str], url: str, key: str, concurrency: int, progress: IO[str]) -> Summary:
    work = [(number, text) for number, text in enumerate(lines, 1) if text.strip()]
    summary = Summary(total=len(work))
    draw = progress.isatty()
    pending = iter(work)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:

        async def runner() -> None:
            for number, text in pending:  # shared: each line is taken by one runner
                await _send(session, f"{url}/v1/chat/completions", number, text, summary)
                if draw:
                    _draw(progress, summary)

        await asyncio.gather(*(runner() for _ in range(min(concurrency, len(work)) or 1)))
    if draw:
        progress.write("\n")
    return summary


async def _send(session: aiohttp.ClientSession, url: str, number: int, text: str, summary: Summary) -> None:
    try:
        body: Any = msgspec.json.decode(text)
    except msgspec.DecodeError as e:
        summary.failed(number, f"not JSON ({e})")
        return
    if not isinstance(body, dict):
        summary.failed(number, "not a JSON object")
        return
    body.pop("stream", None)  # not part of the cache key: a whole answer is simpler to take
    body.pop("stream_options", None)
    try:
        async with session.post(url, data=msgspec.json.encode(body)) as response:
            answer = await response.read()
            tier = response.headers.get("x-edge-cache", "")
    except (aiohttp.ClientError, TimeoutError) as e:
        summary.failed(number, f"{type(e).__name__}: {e}")
        return
    if response.status != 200:
        summary.failed(number, f"{response.status} {_message(answer)}")
    elif tier.startswith("hit"):
        summary.hits += 1
    else:
        summary.misses += 1


def _message(body: bytes) -> str:
    try:
        return str(msgspec.json.decode(body)["error"]["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _draw(out: IO[str], s: Summary) -> None:
    width = 30
    filled = width * s.done // s.total if s.total else width
    out.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {s.done}/{s.total}"
        f"  hits {s.hits}  misses {s.misses}  errors {s.errors}"
    )
    out.flush()
