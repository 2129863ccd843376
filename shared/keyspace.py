"""Every Redis key the gateway uses, in one place.

arq's own keys (`arq:job:<id>`, `arq:in-progress:<id>`, `arq:retry:<id>`) are fixed by arq;
everything else lives under one prefix so operators can see and ACL it.
"""

from __future__ import annotations

PREFIX = "edge"


def cache_entry(cache_key: str) -> str:
    """L2 cache entry (the cache key already carries its tenant scope)."""
    return f"{PREFIX}:l2:{cache_key}"


def queue(provider: str) -> str:
    """The arq queue (a sorted set) for one provider's worker pool."""
    return f"{PREFIX}:queue:{provider}"


def queue_health(provider: str) -> str:
    """arq's health-check key for a queue: present while at least one worker of it is alive."""
    return f"{queue(provider)}:health-check"


def wake(provider: str) -> str:
    """Stream the front appends to after enqueueing, so idle workers pick up jobs at once."""
    return f"{PREFIX}:wake:{provider}"


def replies(front_id: str) -> str:
    """Stream a front process reads its answers from; one per front process, not per request."""
    return f"{PREFIX}:reply:{front_id}"


def cancels(provider: str) -> str:
    """Pub/sub channel on which fronts name the jobs whose clients went away."""
    return f"{PREFIX}:cancel:{provider}"
