"""The semantic cache (README "Semantic cache"): a worker answers a request whose last user
message means the same as a cached one, in the same exact context, from that one's L2 entry.

embedder.py (MiniLM on onnxruntime) · guard.py (what must agree besides the vector) ·
index.py (brute force per partition) · stream.py (the shared Redis feed) · cache.py (the
worker's lookup and append) · model_files.py (`edge-agent semantic fetch`).

Nothing here is imported unless a model group has `semantic_cache` configured: numpy,
tokenizers and onnxruntime are the optional `[semantic]` extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.config_error import ConfigError
from shared.semantic_config import SemanticSettings

if TYPE_CHECKING:
    from edge_workers.semantic.cache import SemanticCache

DEFAULT_MAX_VECTORS = 50_000  # ≈ 2.5 KB each in memory (vector, entry, bookkeeping)


def load(provider: str, groups: dict[str, SemanticSettings], env: Mapping[str, str]) -> SemanticCache:
    """The cache for a worker whose provider serves semantic-enabled groups, model loaded.
    Raises ConfigError (one line saying what to do) when the extra or the model is missing."""
    try:
        from edge_workers.semantic.cache import SemanticCache
        from edge_workers.semantic.embedder import Embedder
        from edge_workers.semantic.model_files import ModelMissing, model_dir
    except ImportError as e:
        raise ConfigError(
            f"semantic_cache: needs the [semantic] extra (pip install 'llm-edge-agent[semantic]'): {e}"
        ) from None
    try:
        max_vectors = int(env.get("EDGE_SEMANTIC_MAX_VECTORS") or DEFAULT_MAX_VECTORS)
    except ValueError:
        max_vectors = 0
    if max_vectors <= 0:
        raise ConfigError("EDGE_SEMANTIC_MAX_VECTORS: must be a positive integer")
    directory = model_dir(env)
    try:
        embedder = Embedder(directory)
    except ModelMissing as e:
        raise ConfigError(f"semantic_cache: {e}") from None
    return SemanticCache(provider, groups, embedder, max_vectors)
