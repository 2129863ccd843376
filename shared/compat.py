"""OpenAI-compatible hosted services, as LiteLLM names them: where they are, which variable
holds their key, and the quirks the openai adapter must work around (README "Providers").

Quirks are what each service documented when this was written, not probed against the live
services; each is a per-deployment switch (`stream_options`, `max_tokens_field`) the
gateway's own config form sets directly, so a service that changes needs no code change.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class Service(NamedTuple):
    base_url: str
    key_env: str
    switches: dict[str, Any]  # Deployment fields: stream_options, max_tokens_field


# LiteLLM prefix -> service. hosted_vllm/, lm_studio/, llamafile/ ... have no fixed URL
# (LiteLLM wants their api_base) and are in litellm_config.OPENAI_COMPATIBLE. LiteLLM's
# ollama/ and ollama_chat/ speak Ollama's native API: point openai/ at Ollama's /v1 instead.
SERVICES: dict[str, Service] = {
    # Mistral refuses fields it does not know (422), stream_options and max_completion_tokens
    # among them; it sends usage in the last chunk anyway.
    "mistral": Service(
        "https://api.mistral.ai/v1",
        "MISTRAL_API_KEY",
        {"stream_options": False, "max_tokens_field": "max_tokens"},
    ),
    "groq": Service("https://api.groq.com/openai/v1", "GROQ_API_KEY", {}),
    "together_ai": Service(
        "https://api.together.xyz/v1", "TOGETHERAI_API_KEY", {"max_tokens_field": "max_tokens"}
    ),
    "deepseek": Service(
        "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY", {"max_tokens_field": "max_tokens"}
    ),
    "openrouter": Service(
        "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY", {"max_tokens_field": "max_tokens"}
    ),
}
