"""OpenAI embeddings wire shapes (`CreateEmbeddingRequest` / `CreateEmbeddingResponse` in OpenAI's
spec), as msgspec Structs, and the vector encodings both tiers share.

`input` is one of four shapes (a string, strings, a token array, token arrays). msgspec cannot
tell several array types apart in one union, so the request keeps it as `str | list[Any]` and
`input_shape` checks it, naming the offending element the way OpenAI's `param` would.
"""

from __future__ import annotations

import base64
import struct
import sys
from array import array
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from shared.errors import EdgeError

# `Job.api` of an embeddings request (the front's Api name, the worker's switch to its call).
EMBEDDINGS_API = "embeddings"
MAX_INPUTS = 2048  # OpenAI's maxItems for every array form of `input`

InputShape = Literal["text", "texts", "tokens", "token_lists"]


class EmbeddingsRequest(Struct):
    """The fields the gateway understands; others ride along in the raw JSON object (OpenAI
    upstreams get them as sent)."""

    model: Annotated[str, Meta(min_length=1)]
    input: str | list[Any]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Meta(ge=1)] | None = None
    user: str | None = None


def input_shape(value: str | list[Any]) -> InputShape:
    """Which of the four forms `input` has. Raises EdgeError(400) naming the bad element."""
    if isinstance(value, str):
        if not value:
            raise EdgeError(400, "'input' cannot be an empty string.", param="input")
        return "text"
    if not value:
        raise EdgeError(400, "'input' cannot be an empty array.", param="input")
    if len(value) > MAX_INPUTS:
        raise EdgeError(
            400, f"'input' holds {len(value)} items; at most {MAX_INPUTS} are allowed.", param="input"
        )
    first = value[0]
    if isinstance(first, str):
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                raise EdgeError(400, "Every item of 'input' must be a non-empty string.", param=f"input[{i}]")
        return "texts"
    if _is_token(first):
        for i, item in enumerate(value):
            if not _is_token(item):
                raise EdgeError(400, "Every item of a token array must be an integer.", param=f"input[{i}]")
        return "tokens"
    if isinstance(first, list):
        for i, item in enumerate(value):
            if not isinstance(item, list) or not item or not all(_is_token(t) for t in item):
                raise EdgeError(
                    400, "Every item of 'input' must be a non-empty array of integers.", param=f"input[{i}]"
                )
        return "token_lists"
    raise EdgeError(
        400,
        "'input' must be a string, an array of strings, or an array (of arrays) of integers.",
        param="input",
    )


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def texts_of(value: str | list[Any]) -> list[str]:
    """The texts of a text input (one or many); [] for token input."""
    if isinstance(value, str):
        return [value]
    return value if value and isinstance(value[0], str) else []


# ---- response -----------------------------------------------------------------------------


class Embedding(Struct):
    index: int
    embedding: list[float] | str  # a str when the request asked for base64
    object: Literal["embedding"] = "embedding"


class EmbeddingsUsage(Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class EmbeddingsResponse(Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage | None = None
    object: Literal["list"] = "list"


# ---- vectors ------------------------------------------------------------------------------

_LITTLE = sys.byteorder == "little"


def to_base64(vector: list[float]) -> str:
    """OpenAI's base64 form: the vector as little-endian float32, base64-encoded."""
    packed = array("f", vector)
    if not _LITTLE:
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def from_base64(text: str) -> list[float]:
    """The inverse of `to_base64` (what the SDK does with a base64 answer)."""
    raw = base64.b64decode(text)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


_encode = msgspec.json.Encoder().encode


def embeddings_body(
    vectors: list[list[float]], model: str, prompt_tokens: int, encoding: Literal["float", "base64"]
) -> bytes:
    """An OpenAI embeddings answer for `vectors`, in the client's encoding."""
    data = [Embedding(i, to_base64(v) if encoding == "base64" else v) for i, v in enumerate(vectors)]
    return _encode(EmbeddingsResponse(data, model, EmbeddingsUsage(prompt_tokens, prompt_tokens)))
