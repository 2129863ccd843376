"""The OpenAI request options that shape an answer's content: `response_format` and `logprobs`.

`response_format` json_schema answers a JSON document valid against the schema (so the SDK's
`chat.completions.parse()` works against the fake), json_object a small JSON object. `logprobs`
gives each streamed piece of the answer a deterministic log probability, with `top_logprobs`
alternatives, in OpenAI's shape.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from edge_agent.fake_upstream.content import VOCAB, Completion
from edge_agent.fake_upstream.schema import instance


def structured(body: dict[str, Any], text: str) -> Completion | None:
    """The answer `response_format` asks for, or None when it asks for plain text."""
    fmt = body.get("response_format")
    if not isinstance(fmt, dict):
        return None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        value = instance(spec.get("schema") if isinstance(spec, dict) else None, text)
    elif fmt.get("type") == "json_object":
        value = {"answer": text.strip()[:40] or "text"}
    else:
        return None
    # json.dumps's ", " and ": " separators give the stream several pieces (split at spaces).
    document = json.dumps(value)
    return Completion(document, max(1, len(document) // 4))


def _logprob(token: str) -> float:
    digest = hashlib.blake2b(token.encode(), digest_size=2).digest()
    return -round(int.from_bytes(digest, "little") / 65535 * 2.0, 4)


def token_logprob(token: str, top: int) -> dict[str, Any]:
    """One `logprobs.content` entry: the token, its log probability and `top` alternatives (the
    token itself first, then vocabulary words, each less likely than the one before)."""
    own = _logprob(token)
    candidates = [token, *(" " + VOCAB[(len(token) + i * 7) % len(VOCAB)] for i in range(3 * top))]
    top_entries = [
        {"token": alternative, "logprob": round(own - 0.75 * rank, 4), "bytes": list(alternative.encode())}
        for rank, alternative in enumerate(list(dict.fromkeys(candidates))[:top])
    ]
    return {"token": token, "logprob": own, "bytes": list(token.encode()), "top_logprobs": top_entries}


def top_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token when `logprobs` is on, else None."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and 0 <= top <= 20 else 0


def choice_logprobs(pieces: list[str], top: int) -> dict[str, Any]:
    return {"content": [token_logprob(piece, top) for piece in pieces], "refusal": None}
