"""A fake OpenAI + Anthropic + Gemini + Azure OpenAI upstream: a real aiohttp server for tests,
benchmarks and the demo.

Endpoints: `POST /v1/chat/completions` (OpenAI), `POST /v1/messages` (Anthropic),
`POST /v1beta/models/{model}:generateContent|streamGenerateContent` (Gemini, `gemini_api.py`),
`POST /openai/deployments/{deployment}/chat/completions` and `/openai/v1/chat/completions`
(Azure, `azure_api.py`), and, outside the APIs, `GET /_fake/stats`, `POST /_fake/reset`,
`GET|POST /_fake/config`, `GET /health`. `base_urls(port)` names each provider's base URL on it.

Answers are deterministic (a function of the messages). OpenAI's `response_format` is honoured
(json_schema: a document valid against the schema, see `schema.py`; json_object: a small object),
and so are `logprobs`/`top_logprobs`; a forced tool's input satisfies its input schema (the
gateway maps `response_format` to one for Anthropic). Behaviour is steered by markers in the
last user message, combinable: `[[fake:status=429]]`, `[[fake:retry_after=0.2]]`,
`[[fake:delay_ms=300]]`, `[[fake:timeout]]`, `[[fake:drop]]`, `[[fake:chunk_delay_ms=50]]`,
`[[fake:stream_error_after=3]]`, `[[fake:stream_drop_after=3]]`, `[[fake:words=N]]`,
`[[fake:error_code=context_length_exceeded]]` (the `code` of a `status` error, OpenAI API only).
`[[fake:times=N]]` limits the failure markers (status, drop, timeout, delay_ms, stream_error_after,
stream_drop_after) to the first N requests with the same key (path + exact last user text); later
ones are answered normally. `POST /_fake/reset` clears those counts.
"""

from edge_agent.fake_upstream.app import (
    BackgroundServer,
    add_arguments,
    base_urls,
    create_app,
    main_from_args,
    run,
    start_runner,
)

__all__ = [
    "BackgroundServer",
    "add_arguments",
    "base_urls",
    "create_app",
    "main_from_args",
    "run",
    "start_runner",
]
