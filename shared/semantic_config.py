"""The semantic cache's settings (`semantic_cache:` on a model_list entry or in router_settings).

Read by `shared.config` with the rest of the file; used by workers only (edge_workers/semantic).
Off unless configured: a group without settings never loads the model nor reads the stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

if TYPE_CHECKING:
    from shared.config import Deployment, ModelTable

Mode = Literal["serve", "shadow"]


class SemanticSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # Cosine similarity a cached message must reach (the lexical guard must agree as well).
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.9
    # serve: answer from the cache (x-edge-cache: hit-semantic); shadow: only log and count
    # what would have been served, and call the upstream as usual.
    mode: Mode = "serve"
    # Only a last user message up to this many characters is embedded (longer: not eligible).
    max_chars: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 2000
    # The temperature the upstream uses when a request sets none. Only deterministic requests
    # are eligible: temperature 0, or unset when this says the default is 0.
    default_temperature: Annotated[float, msgspec.Meta(ge=0)] | None = None


def group_settings(
    deployments: Iterable[Deployment], fallback: SemanticSettings | None
) -> dict[str, SemanticSettings]:
    """Model group -> its semantic settings: an entry's own (it applies to its whole group),
    else router_settings' for every group. Raises ValueError when one group's entries disagree."""
    own: dict[str, SemanticSettings | None] = {}
    names: set[str] = set()
    for d in deployments:
        names.add(d.model_name)
        if d.semantic_cache is None:
            continue
        seen = own.setdefault(d.model_name, d.semantic_cache)
        if seen != d.semantic_cache:
            raise ValueError(f"model group {d.model_name!r}: its entries set different semantic_cache")
    result: dict[str, SemanticSettings] = {}
    for name in names:
        settings = own.get(name) or fallback
        if settings is not None:
            result[name] = settings
    return result


def enabled_groups(models: ModelTable, provider: str | None = None) -> dict[str, SemanticSettings]:
    """The groups (of one provider's, if given) whose semantic cache is on."""
    return {
        name: s
        for name, s in models.semantic.items()
        if provider is None or any(d.provider == provider for d in models.group(name))
    }
