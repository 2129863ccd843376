"""One adapter per provider wire format. `ADAPTERS` maps a provider name to its adapter."""

from __future__ import annotations

from edge_workers.providers.anthropic import AnthropicAdapter
from edge_workers.providers.azure import AzureAdapter
from edge_workers.providers.base import Adapter, UpstreamRequest
from edge_workers.providers.gemini import GeminiAdapter
from edge_workers.providers.openai import OpenAIAdapter

ADAPTERS: dict[str, Adapter] = {
    "openai": OpenAIAdapter(),
    "anthropic": AnthropicAdapter(),
    "gemini": GeminiAdapter(),
    "azure": AzureAdapter(),
}

__all__ = ["ADAPTERS", "Adapter", "UpstreamRequest"]
