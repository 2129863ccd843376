"""Streaming load for the benchmark: time to first token and gaps between chunks, per request.

wrk cannot see individual chunks, so this drives streams with aiohttp (the cheapest Python
client, see ../shared/NOTES.md) from its own process. The same generator measures the gateway
and the upstream directly, so its own overhead cancels out of the "added" figures.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
import uuid
from dataclasses import dataclass, field

import aiohttp


@dataclass
class StreamStats:
    ttft_ms: list[float] = field(default_factory=list)
    gaps_ms: list[float] = field(default_factory=list)
    errors: int = 0

    def pct(self, values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    @property
    def ttft_p50(self) -> float:
        return statistics.median(self.ttft_ms) if self.ttft_ms else float("nan")

    @property
    def ttft_p99(self) -> float:
        return self.pct(self.ttft_ms, 0.99)

    @property
    def gap_p50(self) -> float:
        return statistics.median(self.gaps_ms) if self.gaps_ms else float("nan")


async def _one(session: aiohttp.ClientSession, url: str, body: bytes, stats: StreamStats) -> None:
    started = time.perf_counter()
    first = last = 0.0
    async with session.post(url, data=body) as response:
        if response.status != 200:
            stats.errors += 1
            await response.read()
            return
        async for line in response.content:
            # A content chunk: OpenAI's format, whoever produced it (role chunks carry "").
            if b'"content":"' in line and b'"content":""' not in line:
                now = time.perf_counter()
                if first == 0.0:
                    first = now
                else:
                    stats.gaps_ms.append((now - last) * 1000)
                last = now
    if first:
        stats.ttft_ms.append((first - started) * 1000)
    else:
        stats.errors += 1


async def _drive(url: str, key: str, concurrency: int, duration_s: float, prompt: str) -> StreamStats:
    stats = StreamStats()
    counter = itertools.count()
    tag = uuid.uuid4().hex
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    deadline = time.monotonic() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def loop() -> None:
            while time.monotonic() < deadline:
                # Every request unique: each one is a miss that streams through the queue.
                body = (
                    '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"'
                    f'{prompt} {tag} {next(counter)}"}}]}}'
                ).encode()
                try:
                    await _one(session, url, body, stats)
                except (aiohttp.ClientError, TimeoutError):
                    stats.errors += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return stats


def run(url: str, key: str, concurrency: int, duration_s: float, prompt: str) -> StreamStats:
    try:
        import uvloop

        return uvloop.run(_drive(url, key, concurrency, duration_s, prompt))
    except ImportError:
        return asyncio.run(_drive(url, key, concurrency, duration_s, prompt))
