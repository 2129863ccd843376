"""An answer's cost as it travels beside the answer: the header value, and the L2 entry that
stores it (and when it was stored) in front of the completion, so a cache hit knows what it
saved and how old it is without decoding JSON.

An L2 entry is `b"<cost> <stored ms>\\n<completion JSON>"` (stored: unix milliseconds; the miss
script compares it with a request's max-age). Older forms are still read: `b"<cost>\\n<JSON>"`
(no store time: age unknown) and, before costs were stored, the bare JSON (costing 0). A
completion always starts with `{`, so the forms cannot be confused.
"""

from __future__ import annotations

import time


def format_usd(cost: float) -> bytes:
    """x-edge-cost-usd: fixed point, at most 12 decimals ("0.000135", "0")."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text.encode() if text else b"0"


def with_cost(cost: float, completion: bytes, stored: float | None = None) -> bytes:
    """The L2 entry of `completion`, stored now (or at unix time `stored`)."""
    stored_ms = int((time.time() if stored is None else stored) * 1000)
    return b"%b %d\n%b" % (repr(cost).encode(), stored_ms, completion)


def split_cost(entry: bytes) -> tuple[bytes, float]:
    """(completion, cost) of an L2 entry; cost 0 for an entry without one."""
    completion, cost, _ = split_entry(entry)
    return completion, cost


def split_entry(entry: bytes) -> tuple[bytes, float, float]:
    """(completion, cost, stored unix time) of an L2 entry: cost 0 for an entry without one, and
    stored 0.0 (unknown) for one written before store times were."""
    if entry[:1] == b"{":
        return entry, 0.0, 0.0
    head, sep, completion = entry.partition(b"\n")
    if sep:
        cost_text, _, stored_text = head.partition(b" ")
        try:
            cost = float(cost_text)
            stored = int(stored_text) / 1000 if stored_text else 0.0
        except ValueError:
            cost = -1.0
            stored = 0.0
        if 0.0 <= cost < float("inf"):  # never a NaN or negative into a counter
            return completion, cost, stored
    return entry, 0.0, 0.0  # not ours: handed on as is (the reader decides it is unreadable)


def fresh(entry: bytes, oldest: float | None) -> bool:
    """Whether an L2 entry was stored at unix time `oldest` or later (always, with no bound): the
    miss script's max-age test, for an entry read outside it. Unknown store times are too old."""
    return oldest is None or split_entry(entry)[2] >= oldest
