"""Per-deployment rpm/tpm limits, enforced cluster-wide without a Redis round trip per request.

Usage lives in one Redis hash per deployment and minute (`keyspace.usage`): requests (`r`) are
counted by the front inside the enqueue pipeline it sends anyway, tokens (`t`) by the worker
inside the publish pipeline it sends anyway. The router's refresh (twice a second, one round
trip) reads the current minute's hashes; between reads this front adds the requests it sent
itself, so one front cannot overshoot on its own, and the cluster overshoots by at most what
the other fronts sent within half a second. Tokens are known only after an answer: a tpm limit
stops new requests once the minute's tokens reached it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from shared import keyspace
from shared.config import Deployment
from shared.errors import EdgeError

FIELDS = ("r", "t")


def _minute(now: float) -> int:
    return int(now // 60)


@dataclass(frozen=True)
class Read:
    """One refresh's read: which hashes, and what this front had counted locally when sent."""

    minute: int
    ids: list[str]
    keys: list[str]
    pending: dict[str, int]


class DeploymentLimits:
    def __init__(self, deployments: Iterable[Deployment]) -> None:
        self._limited = {d.id for d in deployments if d.rpm is not None or d.tpm is not None}
        self._read: dict[str, tuple[int, int, int]] = {}  # id -> (minute, requests, tokens) in Redis
        self._pending: dict[str, tuple[int, int]] = {}  # id -> (minute, requests sent since the read)

    def count(self, deployment_id: str, now: float) -> str | None:
        """Note one request sent to the deployment: the usage hash to count it in (with the
        enqueue), or None when the deployment has no limits."""
        if deployment_id not in self._limited:
            return None
        minute = _minute(now)
        seen, sent = self._pending.get(deployment_id, (minute, 0))
        self._pending[deployment_id] = (minute, sent + 1 if seen == minute else 1)
        return keyspace.usage(deployment_id, now)

    def uncount(self, deployment_id: str, now: float) -> None:
        """Take back a `count` whose request was not sent after all (an L2 hit, a flight joined)."""
        seen, sent = self._pending.get(deployment_id, (0, 0))
        if seen == _minute(now) and sent > 0:
            self._pending[deployment_id] = (seen, sent - 1)

    def begin_read(self, now: float) -> Read:
        ids = sorted(self._limited)
        pending = {i: self._sent(i, _minute(now)) for i in ids}
        return Read(_minute(now), ids, [keyspace.usage(i, now) for i in ids], pending)

    def finish_read(self, read: Read, results: list[list[bytes | None]]) -> None:
        """Adopt what Redis counted; what this front sent before the read is now in it."""
        for deployment_id, (requests, tokens) in zip(read.ids, results, strict=True):
            self._read[deployment_id] = (read.minute, int(requests or 0), int(tokens or 0))
            minute, sent = self._pending.get(deployment_id, (read.minute, 0))
            if minute == read.minute:
                self._pending[deployment_id] = (minute, max(0, sent - read.pending[deployment_id]))

    def _sent(self, deployment_id: str, minute: int) -> int:
        seen, sent = self._pending.get(deployment_id, (minute, 0))
        return sent if seen == minute else 0

    def usage(self, deployment_id: str, now: float) -> tuple[int, int]:
        """(requests, tokens) of the current minute, as far as this front knows."""
        minute = _minute(now)
        seen, requests, tokens = self._read.get(deployment_id, (minute, 0, 0))
        if seen != minute:
            requests, tokens = 0, 0
        return requests + self._sent(deployment_id, minute), tokens

    def at_limit(self, deployment: Deployment, now: float) -> bool:
        if deployment.id not in self._limited:
            return False
        requests, tokens = self.usage(deployment.id, now)
        return (deployment.rpm is not None and requests >= deployment.rpm) or (
            deployment.tpm is not None and tokens >= deployment.tpm
        )

    @staticmethod
    def refusal(now: float) -> EdgeError:
        """Every usable deployment is at its limit: come back when the minute rolls over."""
        wait = max(1, math.ceil(60 - now % 60))
        return EdgeError(
            429,
            "Every deployment for this model is at its rate limit (rpm/tpm); retry later.",
            code="rate_limited",
            headers={"retry-after": str(wait)},
        )
