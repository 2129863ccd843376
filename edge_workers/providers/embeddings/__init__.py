"""Embeddings adapters, one module per provider wire format. `EMBEDDERS` maps a provider name
to its adapter; a provider missing here answers embeddings requests with a 400."""

from __future__ import annotations

from edge_workers.providers.embeddings.base import Answer, Embedder, EmbeddingsCall
from edge_workers.providers.embeddings.bedrock import BedrockEmbedder
from edge_workers.providers.embeddings.gemini import GeminiEmbedder
from edge_workers.providers.embeddings.openai import AzureEmbedder, OpenAIEmbedder

EMBEDDERS: dict[str, Embedder] = {
    "openai": OpenAIEmbedder(),
    "azure": AzureEmbedder(),
    "gemini": GeminiEmbedder(),
    "bedrock": BedrockEmbedder(),
}

__all__ = ["EMBEDDERS", "Answer", "Embedder", "EmbeddingsCall"]
