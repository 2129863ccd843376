"""Deterministic cache keys for chat and embeddings requests.

The key is a hash of the request with the fields that cannot change the answer removed
(`stream`, `stream_options`, `user`, `metadata`, `store`), serialized with sorted keys so that
field order in the client's JSON does not matter. An embeddings request hashes under a prefix of
its own, so no chat body can ever share an entry with an embeddings body (both pass unknown
fields through, so one body could otherwise be valid, and cached, as both).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

_IGNORED = frozenset({"stream", "stream_options", "user", "metadata", "store"})
_encode_sorted = msgspec.json.Encoder(order="sorted").encode

KEY_VERSION = "v1"


def chat_cache_key(body: dict[str, Any], namespace: str) -> str:
    """`namespace` is the cache tenant, derived by the server from the caller's key (never from
    the request): entries never leak across namespaces."""
    normalized = {k: v for k, v in body.items() if k not in _IGNORED and v is not None}
    digest = hashlib.sha256(_encode_sorted(normalized)).hexdigest()
    return f"{KEY_VERSION}:{namespace}:{digest}"


def embeddings_cache_key(body: dict[str, Any], namespace: str) -> str:
    """As `chat_cache_key`, in a hash domain of its own; `encoding_format: float` is the default
    and hashes as if absent."""
    normalized = {
        k: v
        for k, v in body.items()
        if k not in _IGNORED and v is not None and not (k == "encoding_format" and v == "float")
    }
    digest = hashlib.sha256(b"embeddings\n" + _encode_sorted(normalized)).hexdigest()
    return f"{KEY_VERSION}:{namespace}:emb-{digest}"
