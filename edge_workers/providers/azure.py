"""Azure OpenAI: OpenAI's chat-completions wire format at Azure's URLs, with Azure's auth.

- Deployment URLs: `{base}/openai/deployments/{deployment}/chat/completions?api-version=V`,
  where the deployment is the entry's `model` (Azure's deployment name) and V its
  `api_version` (default `DEFAULT_API_VERSION`, Azure's latest GA version when written).
- The v1 API: `{base}/openai/v1/chat/completions`, model in the body, no api-version. Chosen
  when the base URL already ends in `/openai/v1` or `api_version` is `v1` (`preview` adds
  `?api-version=preview`, Azure's way to reach preview features on v1).
- Auth: the `api-key` header (default), or `Authorization: Bearer <token>` with
  `auth: bearer` (a Microsoft Entra ID token; it is read from the environment at the worker's
  start, so a rotated token needs a worker restart).

Answers, streams and errors are OpenAI's (Azure adds `prompt_filter_results` and
`content_filter_results`, which pass through, and its error bodies lack `type`: see
`openai.lenient_error`). A prompt refused by Azure's content filter is its own 400 with code
`content_filter`; an answer cut by it ends with finish_reason `content_filter`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import msgspec

from edge_workers.providers.openai import OpenAIAdapter, OpenAIStreamTranslator
from shared.config import Deployment

DEFAULT_API_VERSION = "2024-10-21"
V1_VERSIONS = frozenset({"v1", "preview", "latest"})


def azure_url(deployment: Deployment, upstream_model: str, path: str = "chat/completions") -> str:
    """The URL of an Azure operation (`chat/completions`, `embeddings`) for this deployment."""
    base, version = deployment.base_url, deployment.api_version
    if base.endswith("/openai/v1") or version in V1_VERSIONS:
        root = base.removesuffix("/openai/v1")
        query = "?api-version=preview" if version == "preview" else ""
        return f"{root}/openai/v1/{path}{query}"
    name = quote(upstream_model, safe="")
    return f"{base}/openai/deployments/{name}/{path}?api-version={version or DEFAULT_API_VERSION}"


class _FilterResults(msgspec.Struct):
    prompt_filter_results: list[Any] | None = None
    choices: list[Any] = []


_decode_filter = msgspec.json.Decoder(_FilterResults).decode


class AzureStreamTranslator(OpenAIStreamTranslator):
    def skipped(self, data: bytes) -> bool:
        """Azure opens a stream with its prompt filter's verdict: a chunk without choices whose
        id, model and object are empty (so it is no chat.completion.chunk). Nothing to forward."""
        try:
            event = _decode_filter(data)
        except msgspec.DecodeError:
            return False
        return event.prompt_filter_results is not None and not event.choices


class AzureAdapter(OpenAIAdapter):
    def url(self, deployment: Deployment, upstream_model: str) -> str:
        return azure_url(deployment, upstream_model)

    def headers(self, deployment: Deployment, api_key: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if api_key:
            if deployment.auth == "bearer":
                headers["Authorization"] = f"Bearer {api_key}"
            else:
                headers["api-key"] = api_key
        return headers

    def stream_translator(self) -> AzureStreamTranslator:
        return AzureStreamTranslator()
