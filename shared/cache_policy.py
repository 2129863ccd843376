"""What the cache may do for one request: its model group's policy, the request's Cache-Control
(and x-edge-cache-ttl) headers and LiteLLM's body field `cache`, folded into one `CacheDecision`.

- Policy (`cache: {mode, ttl}` on a model_list entry for its group, under router_settings for the
  default): `all` caches every request, `deterministic` only those with temperature 0 or a
  `seed`, `off` none. A request the policy does not cache behaves like `no-cache, no-store`: no
  lookup, no write, no single-flight.
- Cache-Control: `no-cache` (no lookup), `no-store` (no write), `max-age=N` (accept an entry no
  older than N s), `s-maxage=N` (store for N s). `x-edge-cache-ttl: N` is `s-maxage=N`.
- Body `cache` (LiteLLM's): `no-cache`, `no-store`, `ttl` (store for N s) and `s-maxage`, which in
  LiteLLM means what HTTP's `max-age` means (accept an entry no older than N s). The field is
  removed from the body: never sent upstream, never part of the cache key.

A stored TTL asked for by the request is bounded by `max_ttl_s` (the operator's); the policy's
own ttl is the operator's and is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from shared.errors import EdgeError

CacheMode = Literal["all", "deterministic", "off"]
_encode = msgspec.json.encode


class CachePolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`cache:` on a model_list entry (its group) or under router_settings (the default)."""

    # YAML 1.1 reads a bare `off` as false: taken to mean "off", so `mode: off` works unquoted.
    mode: CacheMode | bool = "all"
    ttl: Annotated[int, msgspec.Meta(ge=1)] | None = None  # seconds in L2; None: EDGE_L2_TTL

    def __post_init__(self) -> None:
        if self.mode is False:
            msgspec.structs.force_setattr(self, "mode", "off")
        elif self.mode is True:
            raise ValueError("Invalid enum value True - mode is one of all, deterministic, off")


DEFAULT_POLICY = CachePolicy()


@dataclass(frozen=True, slots=True)
class CacheDecision:
    lookup: bool = True  # may be answered from the cache (L1, L2, or an identical flight)
    store: bool = True  # its answer may be stored
    max_age_s: float | None = None  # only entries at most this old are served
    ttl_s: int | None = None  # how long L2 keeps its answer; None: the configured default


ALL = CacheDecision()
NONE = CacheDecision(lookup=False, store=False)


def strip_body_field(raw: dict[str, Any], body: bytes) -> tuple[Any, bytes]:
    """(LiteLLM's `cache` field or None, the body without it). `raw` loses the field too, so the
    cache key never includes it. Costs nothing for a body without one."""
    if "cache" not in raw:
        return None, body
    field = raw.pop("cache")
    return field, _encode(raw)


def decide(
    policy: CachePolicy,
    raw: dict[str, Any],
    headers: dict[bytes, bytes],
    body_field: Any,
    max_ttl_s: int,
    sampled: bool = True,
) -> CacheDecision:
    """The request's cache decision (`sampled`: whether its API samples an answer, as chat and
    Messages do; an embedding is always deterministic). Raises EdgeError(400) for a malformed
    control."""
    control = headers.get(b"cache-control")
    header_ttl = headers.get(b"x-edge-cache-ttl")
    if control is None and header_ttl is None and body_field is None and policy == DEFAULT_POLICY:
        return ALL  # the common case: nothing to parse
    if policy.mode == "off" or (policy.mode == "deterministic" and sampled and not deterministic(raw)):
        return NONE
    lookup = store = True
    max_age: float | None = None
    ttl: int | None = None
    if control is not None:
        for directive in control.decode("latin-1").lower().split(","):
            name, _, value = directive.strip().partition("=")
            if name == "no-cache":
                lookup = False
            elif name == "no-store":
                store = False
            elif name == "max-age":
                max_age = _seconds(value, "Cache-Control max-age")
            elif name == "s-maxage":
                ttl = _ttl(value, "Cache-Control s-maxage")
    if header_ttl is not None:
        ttl = _ttl(header_ttl.decode("latin-1"), "x-edge-cache-ttl")
    if body_field is not None:
        if not isinstance(body_field, dict):
            raise EdgeError(400, "'cache' must be an object (LiteLLM's cache controls).", param="cache")
        if body_field.get("no-cache") is True:
            lookup = False
        if body_field.get("no-store") is True:
            store = False
        if body_field.get("s-maxage") is not None:
            max_age = _seconds(body_field["s-maxage"], "cache.s-maxage")
        if body_field.get("ttl") is not None:
            ttl = _ttl(body_field["ttl"], "cache.ttl")
    if ttl is not None:
        ttl = min(ttl, max_ttl_s)
    elif policy.ttl is not None:
        ttl = policy.ttl
    return CacheDecision(lookup, store, max_age, ttl)


def deterministic(raw: dict[str, Any]) -> bool:
    """Whether the request asks for a reproducible answer: temperature 0, or a seed."""
    return raw.get("temperature") == 0 or raw.get("seed") is not None


def _seconds(value: Any, what: str) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise EdgeError(400, f"{what} must be a non-negative number of seconds.", param=what)
    return number


def _ttl(value: Any, what: str) -> int:
    number = _number(value)
    if number is None or number < 1:
        raise EdgeError(400, f"{what} must be a whole number of seconds, at least 1.", param=what)
    return int(number)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if number == number and number != float("inf") else None
