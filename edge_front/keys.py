"""Who is calling: the master key or a virtual key, decided in-process on every request.

Every front holds all keys in memory (`KeyCache`). Checking a presented key is a dict lookup by
its public id, one SHA-256 and a constant-time comparison with the stored hash: no Redis round
trip on the request path. A background task reads `edge:keys:version` (one small GET) every
`POLL_S` and, when it moved, reloads only the keys named in `edge:keys:changes` since the last
version it saw, so an update, block or delete reaches every front within a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from shared import keyspace
from shared.keys import KEY_PREFIX, KeyRecord, StoredKey, decode_record, load_rows, period_seconds
from shared.tasks import poll_forever

log = logging.getLogger("edge.front")

POLL_S = 0.3  # with a reload's own round trips, well inside the promised second
LOAD_BATCH = 1000
MASTER_NAMESPACE = "master"
_PREFIX = KEY_PREFIX.encode()
_ID_END = len(_PREFIX) + 16  # public ids are 16 hex digits


class ModelMatcher:
    """A key's `models`, compiled once: exact names, `*`, and prefixes such as `gpt-4o*`.
    An empty list allows every model (LiteLLM's meaning)."""

    __slots__ = ("everything", "exact", "prefixes")

    def __init__(self, patterns: list[str]) -> None:
        self.everything = not patterns or "*" in patterns
        self.exact = frozenset(p for p in patterns if not p.endswith("*"))
        self.prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))

    def __call__(self, model: str) -> bool:
        return self.everything or model in self.exact or model.startswith(self.prefixes)


@dataclass(frozen=True, slots=True)
class Identity:
    """What a request is allowed and whose cache it uses. Never holds the key itself."""

    key_id: str | None  # the public id; None for the master key
    namespace: str  # the cache scope: chosen by the server, never by the client
    allows: ModelMatcher
    alias: str | None = None
    rpm_limit: int | None = None  # enforced at enqueue (shared/admission.py)
    max_parallel: int | None = None
    tpm_limit: int | None = None
    max_budget: float | None = None  # USD per budget period
    period_s: int | None = None  # budget_duration in seconds; None: the budget never resets
    created_at: float = 0.0  # unix: budget periods count from here

    @property
    def is_master(self) -> bool:
        return self.key_id is None


MASTER = Identity(None, MASTER_NAMESPACE, ModelMatcher([]))


def identity_of(record: KeyRecord) -> Identity:
    # "key:" keeps every virtual key's scope apart from the master's, whatever namespace it is given.
    return Identity(
        record.key_id,
        "key:" + record.namespace,
        ModelMatcher(record.models),
        record.key_alias,
        record.rpm_limit,
        record.max_parallel_requests,
        record.tpm_limit,
        record.max_budget,
        period_seconds(record.budget_duration) if record.budget_duration else None,
        record.created_at.timestamp() if record.created_at is not None else 0.0,
    )


@dataclass(frozen=True, slots=True)
class _Entry:
    key_hash: bytes  # hex SHA-256 of the whole key, as stored
    identity: Identity | None  # None: deleted (a tombstone)
    blocked: bool = False
    expires_at: float | None = None


def _entry(stored: StoredKey) -> _Entry:
    if stored.record is None:
        return _Entry(stored.key_hash, None)
    record = decode_record(stored.record)
    return _Entry(stored.key_hash, identity_of(record), record.blocked, record.expires_at())


class KeysNotLoaded(Exception):
    """The front has not read the keys from Redis yet (it keeps trying)."""


class KeyCache:
    def __init__(self) -> None:
        self.redis: Redis | None = None
        self.loaded = False
        self._entries: dict[bytes, _Entry] = {}
        self._version = -1
        self._last_change = b"0-0"
        self._lock = asyncio.Lock()  # the poll and an admin change may refresh at once

    def __len__(self) -> int:
        return sum(1 for e in self._entries.values() if e.identity is not None)

    def check(self, token: bytes) -> Identity | str:
        """The identity of a virtual key, or why it is refused: "unknown key", "key deleted",
        "key blocked", "key expired". Raises KeysNotLoaded before the first load."""
        entry = self._entries.get(token[len(_PREFIX) : _ID_END]) if token.startswith(_PREFIX) else None
        if entry is None or token[_ID_END : _ID_END + 1] != b"-":
            if not self.loaded:
                raise KeysNotLoaded
            return "unknown key"
        # Constant time over the whole key's hash: a wrong secret reveals nothing about which part.
        if not hmac.compare_digest(hashlib.sha256(token).hexdigest().encode(), entry.key_hash):
            return "unknown key"
        if entry.identity is None:
            return "key deleted"
        if entry.blocked:
            return "key blocked"
        if entry.expires_at is not None and time.time() >= entry.expires_at:
            return "key expired"
        return entry.identity

    async def run(self) -> None:
        """Poll for changes for the life of the front (cancelled at shutdown); on a failure,
        keep the keys loaded."""
        await poll_forever(
            self.refresh, POLL_S, log, "could not refresh virtual keys (%s); keeping the ones loaded"
        )

    async def refresh(self) -> None:
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        assert self.redis is not None
        version = int(await self.redis.get(keyspace.keys_version()) or 0)
        if self.loaded and version == self._version:
            return
        if not self.loaded:
            await self.load_all()
            return
        changes = await self.redis.xrange(keyspace.key_changes(), min=b"(" + self._last_change, max="+")
        if not changes or int(changes[0][1][b"v"]) != self._version + 1:
            await self.load_all()  # the stream was trimmed past what we saw: start over
            return
        ids = list(dict.fromkeys(fields[b"id"].decode() for _, fields in changes))
        rows = await load_rows(self.redis, ids)
        for public_id in ids:
            stored = rows.get(public_id)
            if stored is None:  # a tombstone that expired
                self._entries.pop(public_id.encode(), None)
            else:
                self._entries[public_id.encode()] = _entry(stored)
        self._last_change = changes[-1][0]
        self._version = int(changes[-1][1][b"v"])

    async def load_all(self) -> None:
        """Every key, replacing what is held (at start, and when changes were missed)."""
        assert self.redis is not None
        async with self.redis.pipeline(transaction=True) as pipe:  # one consistent snapshot
            pipe.get(keyspace.keys_version())
            pipe.xrevrange(keyspace.key_changes(), count=1)
            pipe.zrange(keyspace.key_index(), 0, -1)
            pipe.zrange(keyspace.deleted_keys(), 0, -1)
            version, last, live, deleted = await pipe.execute()
        ids = [i.decode() for i in (*live, *deleted)]
        entries: dict[bytes, _Entry] = {}
        for start in range(0, len(ids), LOAD_BATCH):
            rows = await load_rows(self.redis, ids[start : start + LOAD_BATCH])
            entries.update((public_id.encode(), _entry(stored)) for public_id, stored in rows.items())
        # Changes made while loading are in the stream after `last`: the next poll applies them.
        self._entries = entries
        self._version = int(version or 0)
        self._last_change = last[0][0] if last else b"0-0"
        if not self.loaded:
            log.info("loaded %d virtual keys", len(self))
        self.loaded = True
