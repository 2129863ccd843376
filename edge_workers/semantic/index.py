"""The in-memory vectors one worker searches: brute force per exact-context partition, in numpy.

A partition holds the messages of one tenant, model group, system prompt, earlier messages and
parameters; a lookup compares the new message with every vector of its partition only (10k
vectors: ≈ 0.15 ms; 100k: 6-7 ms). Every worker holds every partition: the vectors come from
the shared Redis stream (`stream.py`), so a paraphrase is found whichever worker answered first.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from edge_workers.semantic.embedder import DIMENSIONS


@dataclass(frozen=True, slots=True)
class Entry:
    cache_key: str  # the L2 entry holding the answer (the index keeps no copy of it)
    features: bytes  # the guard's features, encoded (guard.encode_features)
    expires_ms: int  # the L2 entry's expiry: past it, the vector points at nothing
    request_id: str  # the request whose answer it is, for shadow-mode log lines


class Partition:
    def __init__(self) -> None:
        self.vectors = np.empty((8, DIMENSIONS), dtype=np.float32)
        self.entries: list[Entry] = []
        self.slots: dict[str, int] = {}  # cache key -> row

    def put(self, vector: np.ndarray, entry: Entry) -> None:
        row = self.slots.get(entry.cache_key)
        if row is None:
            row = len(self.entries)
            if row == len(self.vectors):
                grown = np.empty((2 * row, DIMENSIONS), dtype=np.float32)
                grown[:row] = self.vectors
                self.vectors = grown
            self.entries.append(entry)
            self.slots[entry.cache_key] = row
        else:
            self.entries[row] = entry
        self.vectors[row] = vector

    def remove(self, cache_key: str) -> Entry | None:
        row = self.slots.pop(cache_key, None)
        if row is None:
            return None
        removed = self.entries[row]
        last = len(self.entries) - 1
        if row != last:  # the last row fills the hole
            moved = self.entries[last]
            self.entries[row] = moved
            self.vectors[row] = self.vectors[last]
            self.slots[moved.cache_key] = row
        self.entries.pop()
        return removed

    def search(self, query: np.ndarray, threshold: float) -> list[tuple[float, Entry]]:
        """Entries at least `threshold` similar to `query`, most similar first."""
        n = len(self.entries)
        if n == 0:
            return []
        similarities = self.vectors[:n] @ query
        rows = np.flatnonzero(similarities >= threshold)
        order = rows[np.argsort(-similarities[rows])]
        return [(float(similarities[r]), self.entries[r]) for r in order]


class Index:
    def __init__(self, max_vectors: int) -> None:
        self.max_vectors = max_vectors
        self.partitions: dict[bytes, Partition] = {}
        self.count = 0
        # (partition, entry) in arrival order: the oldest go first, at expiry or over the bound.
        self._order: deque[tuple[bytes, Entry]] = deque()

    def add(self, partition: bytes, vector: np.ndarray, entry: Entry) -> None:
        part = self.partitions.get(partition)
        if part is None:
            part = self.partitions[partition] = Partition()
        before = len(part.entries)
        part.put(vector, entry)
        self.count += len(part.entries) - before
        self._order.append((partition, entry))
        while self.count > self.max_vectors and self._order:
            self._drop_oldest()

    def search(self, partition: bytes, query: np.ndarray, threshold: float) -> list[tuple[float, Entry]]:
        part = self.partitions.get(partition)
        return [] if part is None else part.search(query, threshold)

    def remove(self, partition: bytes, cache_key: str) -> None:
        part = self.partitions.get(partition)
        if part is not None and part.remove(cache_key) is not None:
            self.count -= 1
            if not part.entries:
                del self.partitions[partition]

    def expire(self, now_ms: int) -> None:
        """Forget vectors whose L2 entry has expired (arrival order is close to expiry order)."""
        while self._order and self._order[0][1].expires_ms <= now_ms:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        partition, entry = self._order.popleft()
        part = self.partitions.get(partition)
        if part is None:
            return
        row = part.slots.get(entry.cache_key)
        if row is not None and part.entries[row] is entry:  # not replaced by a newer one since
            self.remove(partition, entry.cache_key)
