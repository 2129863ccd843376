"""The semantic index's shared feed: a Redis stream every semantic-enabled worker tails.

A worker that caches an answer appends its entry (`append`, in the same pipeline that publishes
the answer: no round trip of its own); each worker replays the stream when it starts and then
follows it (`follow`), so all hold the same vectors. Appends trim by approximate MINID (whole
macro nodes only): an exact XTRIM of a large stream blocked Redis for 915 ms, measured.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import RedisError

from edge_workers.semantic.embedder import DIMENSIONS
from edge_workers.semantic.index import Entry, Index
from shared import keyspace
from shared.commands import CommandSink

log = logging.getLogger("edge.semantic")

BATCH = 1000
BLOCK_MS = 5000


def append(pipe: CommandSink, partition: bytes, vector: np.ndarray, entry: Entry, ttl_s: int) -> None:
    """Queue on `pipe` the entry for one cached answer (vector as float16: 768 bytes)."""
    fields: dict[bytes, bytes] = {
        b"p": partition,
        b"v": vector.astype("<f2").tobytes(),
        b"k": entry.cache_key.encode(),
        b"f": entry.features,
        b"e": str(entry.expires_ms).encode(),
        b"r": entry.request_id.encode(),
    }
    oldest = int(time.time() * 1000) - ttl_s * 1000
    pipe.xadd(keyspace.semantic_vectors(), fields, minid=max(oldest, 0), approximate=True)


def decode(fields: dict[bytes, bytes]) -> tuple[bytes, np.ndarray, Entry]:
    vector = np.frombuffer(fields[b"v"], dtype="<f2").astype(np.float32)
    if vector.shape != (DIMENSIONS,):
        raise ValueError("not a vector of this model")
    entry = Entry(
        fields[b"k"].decode(),
        fields[b"f"],
        int(fields[b"e"]),
        fields.get(b"r", b"").decode(),
    )
    return fields[b"p"], vector, entry


async def follow(redis: Redis, index: Index, on_batch: Callable[[], None] | None = None) -> None:
    """Replay the stream from its start into `index`, then add each new entry as it comes."""
    last: bytes | str = "0-0"
    failing = False
    while True:
        try:
            batch = await redis.xread({keyspace.semantic_vectors(): last}, count=BATCH, block=BLOCK_MS)
        except asyncio.CancelledError:
            raise
        except (RedisError, OSError) as e:
            if not failing:
                log.warning("semantic stream unreadable (%s); retrying", type(e).__name__)
            failing = True
            await asyncio.sleep(0.5)
            continue
        failing = False
        now_ms = int(time.time() * 1000)
        for _, entries in batch or ():
            for entry_id, fields in entries:
                last = entry_id
                try:
                    partition, vector, entry = decode(fields)
                except (KeyError, ValueError):
                    log.warning("skipped a malformed semantic stream entry %s", entry_id.decode())
                    continue
                if entry.expires_ms > now_ms:
                    index.add(partition, vector, entry)
        index.expire(now_ms)
        if on_batch is not None:
            on_batch()
