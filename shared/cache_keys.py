"""Deterministic cache keys for requests.

The key is a hash of the request with the fields that cannot change the answer removed
(`stream`, `stream_options`, `user`, `metadata`, `store`), serialized with sorted keys so that
field order in the client's JSON does not matter. Requests of another API than chat completions
(Anthropic's Messages, embeddings) are keyed apart, with the upstream-bound headers that can
change the answer (anthropic-beta, anthropic-version): the same content asked in two APIs is
answered in two shapes, so it is two entries.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})
_encode_sorted = msgspec.json.Encoder(order="sorted").encode

KEY_VERSION = "v1"


def answer_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The fields of a request that can change its answer (the semantic cache's partition is
    made of them too)."""
    return {k: v for k, v in body.items() if k not in _IGNORED and v is not None}


def cache_key(
    body: dict[str, Any], namespace: str, api: str = "chat", headers: dict[str, str] | None = None
) -> str:
    """`namespace` is the cache tenant, derived by the server from the caller's key (never from
    the request): entries never leak across namespaces."""
    normalized = answer_fields(body)
    if api == "chat":  # keys as they always were: existing entries stay valid
        digest = hashlib.sha256(_encode_sorted(normalized)).hexdigest()
        return f"{KEY_VERSION}:{namespace}:{digest}"
    digest = hashlib.sha256(_encode_sorted([normalized, headers or {}])).hexdigest()
    return f"{KEY_VERSION}:{api}:{namespace}:{digest}"


def key_prefix(namespace: str, api: str = "chat") -> str:
    """The start of every cache key `cache_key` makes for `namespace` and `api`."""
    return f"{KEY_VERSION}:{namespace}:" if api == "chat" else f"{KEY_VERSION}:{api}:{namespace}:"


def chat_cache_key(body: dict[str, Any], namespace: str) -> str:
    return cache_key(body, namespace)


def namespace_of(cache_key: str) -> str:
    """The tenant namespace inside a key `chat_cache_key` made (it may itself hold colons)."""
    return cache_key[len(KEY_VERSION) + 1 : cache_key.rindex(":")]


def digest_of(fields: dict[str, Any], namespace: str) -> bytes:
    """16 bytes naming (`namespace`, `fields`), whatever the order of the fields' keys."""
    return hashlib.sha256(namespace.encode() + b"\0" + _encode_sorted(fields)).digest()[:16]
