"""L1: an in-process LRU cache of answers, bounded by entries, bytes and age. Each answer is kept
with what it cost when it was asked (a hit saved that much; see `shared.costs`)."""

from __future__ import annotations

from collections import OrderedDict
from time import monotonic


class L1Cache:
    def __init__(self, max_entries: int, max_bytes: int, ttl_s: float) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.bytes = 0
        self._items: OrderedDict[str, tuple[float, bytes, float]] = OrderedDict()  # (expiry, answer, cost)

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: str) -> tuple[bytes, float] | None:
        """(answer, its cost in USD), or None."""
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < monotonic():
            self._remove(key)
            return None
        self._items.move_to_end(key)
        return item[1], item[2]

    def set(self, key: str, value: bytes, cost: float = 0.0) -> None:
        if self.max_entries <= 0 or len(value) > self.max_bytes:
            return
        if key in self._items:
            self._remove(key)
        self._items[key] = (monotonic() + self.ttl_s, value, cost)
        self.bytes += len(value)
        while len(self._items) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._items))
            self._remove(oldest)

    def delete(self, key: str) -> None:
        if key in self._items:
            self._remove(key)

    def _remove(self, key: str) -> None:
        value = self._items.pop(key)[1]
        self.bytes -= len(value)
