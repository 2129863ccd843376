"""Virtual keys: their format, their record (the one wire shape of the admin API, the CLI and
Redis), and their storage. The front's in-process copy lives in `edge_front/keys.py`.

A key is `sk-edge-<public id>-<secret>`. Redis holds only the SHA-256 of the whole key and the
record, under the public id; the key itself is shown once, when it is made. Everything that
names a key (logs, metrics, the admin API's listings) uses the public id or the alias.

Every change is one Lua call that writes the record, bumps `edge:keys:version` and appends the
public id to `edge:keys:changes` (with the new version), so fronts notice a change by reading
one counter and reload only what changed.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct
from redis.asyncio import Redis

from shared import keyspace

KEY_PREFIX = "sk-edge-"
_PUBLIC_ID = re.compile(r"[0-9a-f]{16}")
# `1h`, `1d`, `7d`, `30d` and the like: seconds, minutes, hours, days (LiteLLM's units).
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([1-9][0-9]{0,5})([smhd])")
_NAMESPACE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
CHANGES_MAXLEN = 10_000
TOMBSTONE_TTL_S = 30 * 86400  # how long a deleted key is answered "key deleted", not "unknown key"

Limit = Annotated[int, Meta(ge=0, le=10**12)]


class KeyError_(ValueError):
    """A key request the admin API answers with 400 (or 404 for `not_found`)."""

    def __init__(self, message: str, not_found: bool = False) -> None:
        super().__init__(message)
        self.not_found = not_found


class KeySpec(Struct, forbid_unknown_fields=True, omit_defaults=False):
    """What an operator sets on a key (`POST /key/generate` and `/key/update`, LiteLLM's names).

    The limits and the budget are enforced at admission (shared/admission.py)."""

    key_alias: str | None = None
    models: list[str] = []  # empty: every model (LiteLLM's meaning); `*` and `gpt-4o*` match too
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    max_parallel_requests: Limit | None = None
    max_budget: float | None = None  # USD
    budget_duration: str | None = None  # spend resets at the end of each period
    expires: datetime | None = None  # ISO 8601; without a zone, UTC
    blocked: bool = False
    cache_namespace: str | None = None  # None: the key's own (its public id)
    metadata: dict[str, Any] = {}

    def __post_init__(self) -> None:
        # msgspec raises these as ValidationError naming the struct; JSON cannot say NaN, but
        # 1e999 decodes to inf and the CLI passes Python floats.
        if self.max_budget is not None and not (math.isfinite(self.max_budget) and self.max_budget >= 0):
            raise ValueError("max_budget must be a finite number >= 0")
        if self.budget_duration is not None and not _DURATION.fullmatch(self.budget_duration):
            raise ValueError("budget_duration must be a count and a unit of s, m, h or d (e.g. 1h, 30d)")
        if self.cache_namespace is not None and not _NAMESPACE.fullmatch(self.cache_namespace):
            raise ValueError("cache_namespace must be 1-128 of A-Z a-z 0-9 . _ : -")
        if self.key_alias is not None and not 0 < len(self.key_alias) <= 256:
            raise ValueError("key_alias must be 1-256 characters")
        if len(self.models) > 1000 or any(not m or len(m) > 256 for m in self.models):
            raise ValueError("models must be at most 1000 names of 1-256 characters")
        if self.expires is not None and self.expires.tzinfo is None:
            self.expires = self.expires.replace(tzinfo=UTC)


class KeyRecord(KeySpec, forbid_unknown_fields=True):
    """A stored key: the operator's spec plus what the gateway fills in."""

    key_id: str = ""  # the public id
    key_name: str = ""  # LiteLLM's abbreviated key for display: `sk-edge-<id>-...`
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def namespace(self) -> str:
        return self.cache_namespace or self.key_id

    def expires_at(self) -> float | None:
        return self.expires.timestamp() if self.expires is not None else None


class KeyInfo(KeyRecord):
    """A key's record and its usage in the current budget period (`/key/info`'s `info`, as
    LiteLLM shapes it). Upstream answers only: cache hits are free and not counted."""

    spend: float = 0.0  # USD
    budget_reset_at: datetime | None = None  # None: the key has no budget_duration
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


_record_encoder = msgspec.json.Encoder()
_record_decoder = msgspec.json.Decoder(KeyRecord)


def encode_record(record: KeyRecord) -> bytes:
    return _record_encoder.encode(record)


def decode_record(data: bytes) -> KeyRecord:
    return _record_decoder.decode(data)


def spec_from(fields: dict[str, Any]) -> KeySpec:
    """A validated spec from the admin API's or the CLI's fields. Raises KeyError_ (400)."""
    try:
        return msgspec.convert(fields, KeySpec, strict=False)
    except msgspec.ValidationError as e:
        raise KeyError_(f"Invalid key settings: {e}") from None


# ---- format ----------------------------------------------------------------------------


def make_key() -> tuple[str, str]:
    """(public id, whole key). 64 bits of public id (unique, not secret), 256 of secret."""
    public_id = secrets.token_hex(8)
    return public_id, f"{KEY_PREFIX}{public_id}-{secrets.token_urlsafe(32)}"


def public_id_of(key: str | bytes) -> str | None:
    """The public id of a well-formed key, else None. Only the format is checked."""
    text = key.decode("latin-1") if isinstance(key, bytes) else key
    if not text.startswith(KEY_PREFIX):
        return None
    public_id, dash, secret = text[len(KEY_PREFIX) :].partition("-")
    if not dash or not secret or not _PUBLIC_ID.fullmatch(public_id):
        return None
    return public_id


def hash_key(key: str | bytes) -> str:
    return hashlib.sha256(key.encode() if isinstance(key, str) else key).hexdigest()


def period_seconds(duration: str) -> int:
    """`30d` -> 2592000 (validated by KeySpec)."""
    match = _DURATION.fullmatch(duration)
    if match is None:
        raise ValueError(f"bad duration {duration!r}")
    return int(match[1]) * DURATION_UNITS[match[2]]


def budget_period(created_at: float, period_s: int | None, now: float) -> tuple[str, float]:
    """(name, unix end) of the budget period holding `now`. Periods run back to back from the
    key's creation, as LiteLLM's budget_reset_at does; the name holds the period's length, so
    changing budget_duration starts counting anew. Without a budget_duration the spend never
    resets: ("life", 0.0)."""
    if not period_s:
        return "life", 0.0
    index = int((now - created_at) // period_s)
    return f"{period_s}s{index}", created_at + (index + 1) * period_s


# ---- storage -----------------------------------------------------------------------------

# KEYS: record hash, index zset, version counter, changes stream, deleted-keys zset, lifetime
# spend hash.
# ARGV: op (create | update | delete), public id, record JSON, key hash, created (unix), expected
# record JSON (update only: compare-and-set, so an update never resurrects a deleted key and two
# concurrent updates do not lose one another).
_APPLY = """
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[1] == 'create' then
  if exists then return 0 end
  redis.call('HSET', KEYS[1], 'record', ARGV[3], 'hash', ARGV[4])
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[2])
elseif ARGV[1] == 'update' then
  if redis.call('HGET', KEYS[1], 'record') ~= ARGV[6] then return 0 end
  redis.call('HSET', KEYS[1], 'record', ARGV[3])
else
  if not exists or redis.call('HEXISTS', KEYS[1], 'record') == 0 then return 0 end
  -- A tombstone (the hash alone) for a while, so fronts can say "key deleted", not "unknown".
  redis.call('HDEL', KEYS[1], 'record')
  redis.call('HSET', KEYS[1], 'deleted', ARGV[5])
  redis.call('EXPIRE', KEYS[1], ARGV[8])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('ZADD', KEYS[5], ARGV[5], ARGV[2])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[5] - ARGV[8])
  -- A lifetime spend has no expiry of its own: it goes with the tombstone.
  redis.call('EXPIRE', KEYS[6], ARGV[8])
end
local v = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'id', ARGV[2], 'v', v)
return v
"""


async def _apply(
    redis: Redis, op: str, public_id: str, record: bytes = b"", key_hash: str = "", expected: bytes = b""
) -> bool:
    keys = [
        keyspace.key_record(public_id),
        keyspace.key_index(),
        keyspace.keys_version(),
        keyspace.key_changes(),
        keyspace.deleted_keys(),
        keyspace.key_spend(public_id, "life"),
    ]
    args: list[Any] = [
        op,
        public_id,
        record,
        key_hash,
        int(time.time()),
        expected,
        CHANGES_MAXLEN,
        TOMBSTONE_TTL_S,
    ]
    return bool(await redis.eval(_APPLY, len(keys), *keys, *args))  # type: ignore[misc,unused-ignore]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


async def create_key(redis: Redis, spec: KeySpec) -> tuple[str, KeyRecord]:
    """Store a new key; returns the whole key (shown once, never stored) and its record."""
    while True:
        public_id, key = make_key()
        now = _now()
        record = msgspec.convert(
            {
                **msgspec.structs.asdict(spec),
                "key_id": public_id,
                "key_name": f"{KEY_PREFIX}{public_id}-...",
                "created_at": now,
                "updated_at": now,
            },
            KeyRecord,
        )
        if await _apply(redis, "create", public_id, encode_record(record), hash_key(key)):
            return key, record
        # 64 random bits collided with an existing id: draw again


async def resolve(redis: Redis, key_or_id: str) -> tuple[str, bytes]:
    """(public id, stored record JSON) for a whole key or a public id. A whole key must be the
    stored one: a wrong secret is as unknown as a wrong id. Raises KeyError_(not_found)."""
    public_id = public_id_of(key_or_id) if key_or_id.startswith(KEY_PREFIX) else key_or_id
    if public_id is None or not _PUBLIC_ID.fullmatch(public_id):
        raise KeyError_("unknown key", not_found=True)
    stored = await redis.hmget(keyspace.key_record(public_id), ["record", "hash"])  # type: ignore[misc]
    record, stored_hash = stored
    if record is None:
        raise KeyError_("unknown key", not_found=True)
    if public_id != key_or_id and not secrets.compare_digest(hash_key(key_or_id).encode(), stored_hash):
        raise KeyError_("unknown key", not_found=True)
    return public_id, record


async def get_key(redis: Redis, key_or_id: str) -> KeyRecord:
    return decode_record((await resolve(redis, key_or_id))[1])


async def key_info(redis: Redis, key_or_id: str) -> KeyInfo:
    """The key's record and what it used in its current budget period."""
    record = await get_key(redis, key_or_id)
    created = record.created_at.timestamp() if record.created_at is not None else 0.0
    period_s = period_seconds(record.budget_duration) if record.budget_duration else None
    period, ends = budget_period(created, period_s, time.time())
    used = await redis.hgetall(keyspace.key_spend(record.key_id, period))  # type: ignore[misc]
    return KeyInfo(
        **msgspec.structs.asdict(record),
        spend=float(used.get(b"spend", 0)),
        budget_reset_at=datetime.fromtimestamp(ends, UTC) if ends else None,
        requests=int(used.get(b"requests", 0)),
        prompt_tokens=int(used.get(b"prompt_tokens", 0)),
        completion_tokens=int(used.get(b"completion_tokens", 0)),
    )


async def update_key(redis: Redis, key_or_id: str, changes: dict[str, Any]) -> KeyRecord:
    """Apply `changes` (KeySpec fields) to a key; the whole result is validated again."""
    for _ in range(10):
        public_id, stored = await resolve(redis, key_or_id)
        current = decode_record(stored)
        fields = {k: v for k, v in msgspec.to_builtins(current).items() if k in KeySpec.__struct_fields__}
        spec = spec_from({**fields, **changes})
        record = msgspec.structs.replace(current, **msgspec.structs.asdict(spec), updated_at=_now())
        if await _apply(redis, "update", public_id, encode_record(record), expected=stored):
            return record
    raise KeyError_("the key changed under ten updates in a row; try again")


async def delete_key(redis: Redis, key_or_id: str) -> str:
    """Delete a key; returns its public id."""
    public_id, _ = await resolve(redis, key_or_id)
    if not await _apply(redis, "delete", public_id):
        raise KeyError_("unknown key", not_found=True)
    return public_id


async def list_keys(redis: Redis, page: int = 1, size: int = 100) -> tuple[int, list[KeyRecord]]:
    """(total, one page of records, oldest first)."""
    start = (page - 1) * size
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zcard(keyspace.key_index())
        pipe.zrange(keyspace.key_index(), start, start + size - 1)
        total, ids = await pipe.execute()
    rows = await load_rows(redis, [i.decode() for i in ids])
    return int(total), [decode_record(row.record) for row in rows.values() if row.record is not None]


class StoredKey(Struct, frozen=True):
    """One key's hash as stored: a live key has a record; a deleted one only its tombstone."""

    key_hash: bytes
    record: bytes | None
    deleted: bool


async def load_rows(redis: Redis, ids: list[str]) -> dict[str, StoredKey]:
    """Public id -> what is stored for those of `ids` that exist (one round trip)."""
    if not ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for public_id in ids:
            pipe.hmget(keyspace.key_record(public_id), ["hash", "record", "deleted"])
        rows = await pipe.execute()
    return {
        public_id: StoredKey(stored_hash, record, deleted is not None)
        for public_id, (stored_hash, record, deleted) in zip(ids, rows, strict=True)
        if stored_hash is not None
    }
