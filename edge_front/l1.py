"""L1: an in-process LRU cache of answers, bounded by entries, bytes and age. Each answer is kept
with what it cost when it was asked (a hit saved that much; see `shared.costs`) and when it was
stored in the cache (unix time; 0.0 unknown), which gives a hit's Age."""

from __future__ import annotations

from collections import OrderedDict
from time import monotonic, time


class L1Cache:
    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        # key -> (expiry (monotonic), answer, cost, stored (unix))
        self._items: OrderedDict[str, tuple[float, bytes, float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> tuple[bytes, float, float] | None:
        """(answer, its cost in USD, when it was stored), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < monotonic():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[1], item[2], item[3]

    def set(
        self,
        key: str,
        value: bytes,
        cost: float = 0.0,
        stored: float | None = None,
        ttl_s: float | None = None,
    ) -> None:
        """`stored`: when the answer entered the cache (default now); `ttl_s`: its own shorter
        lifetime (never longer than L1's)."""
        if self.max_entries <= 0 or len(value) > self.max_bytes:
            return
        if key in self._items:
            self._remove(key)
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        self._items[key] = (monotonic() + ttl, value, cost, time() if stored is None else stored)
        self.bytes += len(value)
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._remove(oldest)

    def delete(self, key: str) -> bool:
        if key in self._items:
            self._remove(key)
            return True
        return False

    def delete_prefix(self, prefix: str) -> int:
        """Drop every entry whose key starts with `prefix` (a namespace's): a walk over L1,
        which is bounded by `max_entries`; only cache admin calls it."""
        doomed = [key for key in self._items if key.startswith(prefix)]
        for key in doomed:
            self._remove(key)
        return len(doomed)

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def _remove(self, key: str) -> None:
        value = self._items.pop(key)[1]
        self.bytes -= len(value)
