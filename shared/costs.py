"""An answer's cost as it travels beside the answer: the header value, and the L2 entry that
stores it in front of the completion so a cache hit knows what it saved without decoding JSON.

An L2 entry is `b"<cost>\\n<completion JSON>"`. A completion always starts with `{`, so an
entry written before costs were stored (the bare JSON) is still read, as costing 0.
"""

from __future__ import annotations


def format_usd(cost: float) -> bytes:
    """x-edge-cost-usd: fixed point, at most 12 decimals ("0.000135", "0")."""
    text = f"{cost:.12f}".rstrip("0").rstrip(".")
    return text.encode() if text else b"0"


def with_cost(cost: float, completion: bytes) -> bytes:
    return repr(cost).encode() + b"\n" + completion


def split_cost(entry: bytes) -> tuple[bytes, float]:
    """(completion, cost) of an L2 entry; cost 0 for an entry without one."""
    if entry[:1] == b"{":
        return entry, 0.0
    head, sep, completion = entry.partition(b"\n")
    if sep:
        try:
            cost = float(head)
        except ValueError:
            cost = -1.0
        if 0.0 <= cost < float("inf"):  # never a NaN or negative into a counter
            return completion, cost
    return entry, 0.0  # not ours: handed on as is (the reader decides it is unreadable)
