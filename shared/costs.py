"""An answer's cost as it travels beside the answer: the header value, and the L2 entry that
stores it (and when it was stored) in front of the completion, so a cache hit knows what it
saved and how old it is without decoding JSON.

An L2 entry is `b"<cost> <stored ms> <ttl s>\\n<completion JSON>"` (stored: unix milliseconds,
which the miss script compares with a request's max-age; ttl: the entry's lifetime, so a front
that copies it into L1 keeps it no longer than L2 does). Older forms are still read:
`b"<cost>\\n<JSON>"` (age unknown) and, before costs were stored, the bare JSON (costing 0). A
completion always starts with `{`, so the forms cannot be confused.
"""

from __future__ import annotations

import time


def format_usd(cost: float) -> bytes:
    """x-edge-cost-usd: fixed point, at most 12 decimals ("0.000135", "0")."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text.encode() if text else b"0"


def with_cost(cost: float, completion: bytes, ttl_s: int, stored: float | None = None) -> bytes:
    """The L2 entry of `completion`, kept `ttl_s`, stored now (or at unix time `stored`)."""
    stored_ms = int((time.time() if stored is None else stored) * 1000)
    return b"%b %d %d\n%b" % (repr(cost).encode(), stored_ms, ttl_s, completion)


def split_cost(entry: bytes) -> tuple[bytes, float]:
    """(completion, cost) of an L2 entry; cost 0 for an entry without one."""
    completion, cost, _, _ = split_entry(entry)
    return completion, cost


def split_entry(entry: bytes) -> tuple[bytes, float, float, int]:
    """(completion, cost, stored unix time, ttl s) of an L2 entry: cost 0 for an entry without
    one; stored 0.0 and ttl 0 (unknown) for one written before they were."""
    if entry[:1] == b"{":
        return entry, 0.0, 0.0, 0
    head, sep, completion = entry.partition(b"\n")
    if sep:
        cost_text, _, rest = head.partition(b" ")
        stored_text, _, ttl_text = rest.partition(b" ")
        try:
            cost = float(cost_text)
            stored = int(stored_text) / 1000 if stored_text else 0.0
            ttl = int(ttl_text) if ttl_text else 0
        except ValueError:
            cost, stored, ttl = -1.0, 0.0, 0
        if 0.0 <= cost < float("inf"):  # never a NaN or negative into a counter
            return completion, cost, stored, ttl
    return entry, 0.0, 0.0, 0  # not ours: handed on as is (the reader decides it is unreadable)


def l1_ttl_s(stored: float, ttl_s: int) -> float | None:
    """What is left of an L2 entry's life (None: unknown), so L1 keeps it no longer."""
    return stored + ttl_s - time.time() if stored and ttl_s else None


def fresh(entry: bytes, oldest: float | None) -> bool:
    """Whether an L2 entry was stored at unix time `oldest` or later (always, with no bound): the
    miss script's max-age test, for an entry read outside it. Unknown store times are too old."""
    return oldest is None or split_entry(entry)[2] >= oldest
