"""Token counts estimated for an answer whose upstream reported no usage.

Some OpenAI-compatible servers send no usage in a stream (they refuse `stream_options`, or
ignore it). The gateway still needs counts for tpm limits, budgets, costs and metrics, so it
estimates them: about four characters per token (OpenAI's own rule of thumb for English), plus
three tokens per message for the chat framing. It is an estimate, not a count: the worker does
not load a tokenizer (tiktoken's tables cost ~50 MB per process, and the upstream's tokenizer
is unknown anyway). Estimated answers are logged once per deployment.
"""

from __future__ import annotations

import logging
from typing import Any

from shared.wire import ChatCompletion, Usage

log = logging.getLogger("edge.worker")
CHARS_PER_TOKEN = 4
PER_MESSAGE = 3
_warned: set[str] = set()


def _chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return 0


def _tokens(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def estimate_usage(body: dict[str, Any], completion: ChatCompletion, deployment_id: str) -> Usage:
    messages = body.get("messages") or []
    prompt = sum(_tokens(_chars(m.get("content"))) + PER_MESSAGE for m in messages if isinstance(m, dict))
    chars = 0
    for choice in completion.choices:
        chars += len(choice.message.content or "")
        for call in choice.message.tool_calls or ():
            chars += len(call.function.name) + len(call.function.arguments)
    answer = _tokens(chars)
    if deployment_id not in _warned:
        _warned.add(deployment_id)
        log.info("deployment %s: the upstream reported no usage; token counts are estimated", deployment_id)
    return Usage(prompt_tokens=prompt, completion_tokens=answer, total_tokens=prompt + answer)
