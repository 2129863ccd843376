"""Cache admin, master key only (routed by `EdgeApp` like the key admin API): GET /cache/stats
and POST /cache/delete, and the poll that makes every front's L1 drop what was deleted.

- Stats read no key lists: L1's own counts, this front's hit and miss counters by tier, and for
  L2 `DBSIZE`, `INFO memory` and a sample of `RANDOMKEY`s (with `MEMORY USAGE` of the L2
  entries among them), from which the number and size of L2 entries are estimated.
- Delete by cache key, by request body (its key computed for a namespace, `master` by default)
  or by whole namespace. A namespace is removed with SCAN (a match pattern, in batches) and
  UNLINK, so Redis never blocks on it.
- Each deletion is appended to `edge:cache:deletes` (numbered by `edge:cache:version`). Every
  front reads that stream every `POLL_S` (one XRANGE, off the request path) and drops the same
  entries from its L1; a front that missed entries (trimmed away, or Redis restarted) clears L1.
  The deleting front applies it before answering.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import Struct
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge_front import metrics
from edge_front.admin import fail_response, json_response, not_found
from edge_front.chat import parse_chat_request
from edge_front.keys import MASTER_NAMESPACE
from edge_front.l1 import L1Cache
from edge_front.messages import MESSAGES
from edge_front.state import FrontState
from shared import keyspace
from shared.cache_keys import KEY_VERSION, chat_cache_key, key_prefix
from shared.embeddings_wire import EMBEDDINGS_API
from shared.errors import EdgeError
from shared.tasks import poll_forever

log = logging.getLogger("edge.front")

PATHS = frozenset({b"/cache/stats", b"/cache/delete"})
POLL_S = 0.3  # an L1 on another front drops a deleted entry well within a second
DELETES_MAXLEN = 1000
SCAN_BATCH = 1000
STATS_SAMPLES = 64
_MAX_BODY = 1 << 20

# KEYS: the version counter, the deletions stream. ARGV: field ('keys' or 'ns'), value, maxlen.
PUBLISH_LUA = """
local v = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', ARGV[1], ARGV[2], 'v', v)
return v
"""


class DeleteRequest(Struct, forbid_unknown_fields=True):
    """One of: `key` / `keys` (cache keys, `v1:<namespace>:<hash>`), `request` (a chat request
    body, keyed in `namespace`), or `namespace` alone (all of it)."""

    key: str | None = None
    keys: list[str] | None = None
    request: dict[str, Any] | None = None
    namespace: str | None = None


class Deleted(Struct):
    deleted: int  # L2 entries removed
    keys: list[str] | None = None  # the cache keys asked for (a namespace deletion: None)
    namespace: str | None = None


def namespace_prefixes(namespace: str) -> list[str]:
    """The starts of every cache key of `namespace`, in each API the front serves."""
    return [key_prefix(namespace, api) for api in ("chat", MESSAGES.name, EMBEDDINGS_API)]


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class Invalidations:
    """This front's reader of the deletions stream, applying them to its L1."""

    def __init__(self) -> None:
        self.l1 = L1Cache(0, 0, 0)  # the front's own, set with `redis` at start
        self.redis: Redis | None = None
        self._last = b"0-0"
        self._version = -1  # unknown until the first read

    async def run(self) -> None:
        await poll_forever(self.poll, POLL_S, log, "could not read cache deletions (%s)")

    async def poll(self) -> None:
        assert self.redis is not None
        if self._version < 0:  # start from now: L1 is empty at start
            last = await self.redis.xrevrange(keyspace.cache_deletes(), count=1)
            self._last, self._version = (last[0][0], int(last[0][1][b"v"])) if last else (b"0-0", 0)
            return
        entries = await self.redis.xrange(keyspace.cache_deletes(), min=b"(" + self._last, max="+")
        if not entries:
            return
        if int(entries[0][1][b"v"]) != self._version + 1:
            self.l1.clear()  # deletions were missed: nothing in L1 can be trusted
        else:
            for _, fields in entries:
                self.apply(fields)
        self._last = entries[-1][0]
        self._version = int(entries[-1][1][b"v"])

    def apply(self, fields: dict[bytes, bytes]) -> None:
        if b"ns" in fields:
            for prefix in namespace_prefixes(fields[b"ns"].decode()):
                self.l1.delete_prefix(prefix)
        for key in msgspec.json.decode(fields.get(b"keys", b"[]"), type=list[str]):
            self.l1.delete(key)


async def _publish(redis: Redis, field: str, value: str | bytes) -> None:
    keys = [keyspace.cache_version(), keyspace.cache_deletes()]
    await redis.register_script(PUBLISH_LUA)(keys=keys, args=[field, value, DELETES_MAXLEN])


async def delete_namespace(redis: Redis, namespace: str) -> int:
    """UNLINK every L2 entry of `namespace`, SCAN batch by batch (never blocking Redis)."""
    deleted = 0
    for prefix in namespace_prefixes(namespace):
        pattern = _glob_escape(keyspace.cache_entry(prefix)) + "*"
        batch: list[bytes] = []
        async for name in redis.scan_iter(match=pattern, count=SCAN_BATCH):
            batch.append(name)
            if len(batch) >= SCAN_BATCH:
                deleted += await redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await redis.unlink(*batch)
    return deleted


async def l2_stats(redis: Redis) -> dict[str, Any]:
    """Estimated from a random sample of keys: no key listing, whatever the keyspace's size."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.dbsize()
        pipe.info("memory")
        for _ in range(STATS_SAMPLES):
            pipe.randomkey()
        size, memory, *sample = await pipe.execute()
    names = [name for name in sample if name is not None]
    prefix = keyspace.cache_entry("").encode()
    entries = [name for name in names if name.startswith(prefix)]
    sizes: list[int] = []
    if entries:
        async with redis.pipeline(transaction=False) as pipe:
            for name in entries:
                pipe.memory_usage(name)
            sizes = [s for s in await pipe.execute() if s is not None]
    share = len(entries) / len(names) if names else 0.0
    estimated = round(size * share)
    return {
        "redis_keys": size,
        "redis_used_memory_bytes": memory.get("used_memory", 0),
        "sampled_keys": len(names),
        "sampled_entries": len(entries),
        "estimated_entries": estimated,
        "estimated_bytes": round(estimated * sum(sizes) / len(sizes)) if sizes else 0,
    }


def _counts(counter: Any) -> dict[str, float]:
    """A labelled counter's values by tier, as this process counted them."""
    return {
        s.labels["tier"]: s.value
        for family in counter.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }


def hit_ratios() -> dict[str, Any]:
    """This front's hits and misses by tier since it started, and the ratios they make."""
    hits, misses = _counts(metrics.CACHE_HITS), _counts(metrics.CACHE_MISSES)
    tiers: dict[str, Any] = {}
    for tier in sorted({*hits, *misses}):
        h, m = hits.get(tier, 0.0), misses.get(tier, 0.0)
        tiers[tier] = {"hits": int(h), "misses": int(m), "hit_ratio": h / (h + m) if h + m else None}
    lookups = hits.get("l1", 0.0) + misses.get("l1", 0.0)  # every lookup starts in L1
    overall = sum(hits.values()) / lookups if lookups else None
    return {"tiers": tiers, "lookups": int(lookups), "hit_ratio": overall}


def create(state_of: Callable[[], FrontState], invalidations: Invalidations) -> Starlette:
    async def stats(request: Request) -> Response:
        state = state_of()
        l1 = state.l1
        answer: dict[str, Any] = {
            "l1": {
                "entries": len(l1),
                "bytes": l1.bytes,
                "max_entries": l1.max_entries,
                "max_bytes": l1.max_bytes,
            },
            "l2": None,
            "requests": hit_ratios(),
            "front": state.front_id,  # L1 and the counters are this front's own
        }
        if state.settings.enable_l2_cache:
            try:
                answer["l2"] = await l2_stats(state.cache_redis)
            except (RedisError, OSError, TimeoutError) as e:
                answer["l2"] = {"error": f"Redis is unavailable ({type(e).__name__})"}
        return json_response(answer)

    async def delete(request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_BODY:
            return fail_response(413, f"Request body is larger than {_MAX_BODY} bytes.")
        try:
            ask = msgspec.json.decode(body, type=DeleteRequest)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            return fail_response(400, f"Invalid request: {e}")
        state = state_of()
        try:
            return json_response(await _delete(state, ask))
        except EdgeError as e:
            return Response(e.body(), e.status, media_type="application/json")
        except (RedisError, OSError, TimeoutError) as e:
            return fail_response(503, f"Redis is unavailable ({type(e).__name__}).")

    async def _delete(state: FrontState, ask: DeleteRequest) -> Deleted:
        named = [ask.key is not None, ask.keys is not None, ask.request is not None]
        by_key = ask.key is not None or ask.keys is not None
        if sum(named) > 1 or (not any(named) and ask.namespace is None) or (by_key and ask.namespace):
            raise EdgeError(
                400, "Give one of 'key', 'keys', 'request' (with an optional 'namespace'), or 'namespace'."
            )
        if ask.namespace is not None and not ask.namespace:
            raise EdgeError(400, "'namespace' must not be empty.", param="namespace")
        if ask.request is not None:
            raw, _ = parse_chat_request(msgspec.json.encode(ask.request))
            raw.pop("cache", None)  # as chat.py's strip_body_field: never part of the key
            keys = [chat_cache_key(raw, ask.namespace or MASTER_NAMESPACE)]
        elif ask.key is not None or ask.keys is not None:
            keys = [ask.key] if ask.key is not None else list(ask.keys or [])
            if not keys or not all(k.startswith(f"{KEY_VERSION}:") for k in keys):
                raise EdgeError(400, f"Cache keys look like '{KEY_VERSION}:<namespace>:<hash>'.", param="key")
        else:
            assert ask.namespace is not None
            count = (
                await delete_namespace(state.cache_redis, ask.namespace)
                if state.settings.enable_l2_cache
                else 0
            )
            fields = {b"ns": ask.namespace.encode()}
            await _publish(state.queue_redis, "ns", ask.namespace)
            invalidations.apply(fields)
            return Deleted(count, namespace=ask.namespace)
        count = 0
        if state.settings.enable_l2_cache:
            count = await state.cache_redis.unlink(*(keyspace.cache_entry(k) for k in keys))
        encoded = msgspec.json.encode(keys)
        await _publish(state.queue_redis, "keys", encoded)
        invalidations.apply({b"keys": encoded})
        return Deleted(count, keys=keys)

    return Starlette(
        routes=[
            Route("/cache/stats", stats, methods=["GET"]),
            Route("/cache/delete", delete, methods=["POST"]),
        ],
        exception_handlers={HTTPException: not_found},
    )
