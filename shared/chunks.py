"""Between streamed chunks and whole completions, both ways.

A finished stream is cached as one `chat.completion` (assembled from its chunks), so a cached
answer serves streaming and non-streaming clients alike: `replay_chunks` turns it back into the
chunk sequence OpenAI would have sent.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.wire import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkFunction,
    ChunkToolCall,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)

_decode_completion = msgspec.json.Decoder(ChatCompletion).decode


class _ChoiceParts:
    __slots__ = ("content", "finish_reason", "logprobs", "refusal", "tool_calls")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.refusal: list[str] = []
        # OpenAI's streamed logprobs: per chunk {"content": [...], "refusal": [...]}, joined here.
        self.logprobs: dict[str, list[Any]] | None = None
        self.tool_calls: dict[int, tuple[str, str, list[str]]] = {}  # index -> (id, name, argument parts)
        self.finish_reason: str | None = None


class ChunkAssembler:
    """Accumulates a stream's chunks into the completion a non-streaming call would have given."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = 0
        self.system_fingerprint: str | None = None
        self.usage: Usage | None = None
        self._choices: dict[int, _ChoiceParts] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.id, self.model, self.created = chunk.id, chunk.model, chunk.created
        self.system_fingerprint = chunk.system_fingerprint or self.system_fingerprint
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            parts = self._choices.setdefault(choice.index, _ChoiceParts())
            delta = choice.delta
            if delta.content:
                parts.content.append(delta.content)
            if delta.refusal:
                parts.refusal.append(delta.refusal)
            for call in delta.tool_calls or ():
                call_id, name, arguments = parts.tool_calls.get(call.index, ("", "", []))
                if call.id:
                    call_id = call.id
                if call.function is not None:
                    name = call.function.name or name
                    if call.function.arguments:
                        arguments.append(call.function.arguments)
                parts.tool_calls[call.index] = (call_id, name, arguments)
            if choice.finish_reason is not None:
                parts.finish_reason = choice.finish_reason
            if isinstance(choice.logprobs, dict):
                joined = parts.logprobs if parts.logprobs is not None else {"content": [], "refusal": []}
                for field in ("content", "refusal"):
                    joined[field].extend(choice.logprobs.get(field) or ())
                parts.logprobs = joined

    @property
    def complete(self) -> bool:
        """Every choice has its finish_reason: the stream really ended, it was not cut."""
        return bool(self._choices) and all(p.finish_reason is not None for p in self._choices.values())

    def completion(self) -> ChatCompletion:
        choices = []
        for index in sorted(self._choices):
            parts = self._choices[index]
            tool_calls = [
                ToolCall(id=call_id, function=FunctionCall(name=name, arguments="".join(arguments)))
                for call_id, name, arguments in (parts.tool_calls[i] for i in sorted(parts.tool_calls))
            ]
            # As a non-streamed answer says it: content null beside tool calls or a refusal.
            no_content = not parts.content and bool(tool_calls or parts.refusal)
            message = ResponseMessage(
                content=None if no_content else "".join(parts.content),
                refusal="".join(parts.refusal) if parts.refusal else None,
                tool_calls=tool_calls or None,
            )
            logprobs = None
            if parts.logprobs is not None:  # as a non-streamed answer has them: null when empty
                logprobs = {field: entries or None for field, entries in parts.logprobs.items()}
            choices.append(
                Choice(index=index, message=message, finish_reason=parts.finish_reason, logprobs=logprobs)
            )
        return ChatCompletion(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=choices,
            usage=self.usage,
            system_fingerprint=self.system_fingerprint,
        )


def replay_chunks(completion_json: bytes, include_usage: bool) -> list[ChatCompletionChunk]:
    """The chunk sequence for a cached completion: role, content, tool calls, finish, usage."""
    completion = _decode_completion(completion_json)

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=completion.id,
            created=completion.created,
            model=completion.model,
            choices=choices,
            usage=usage,
            system_fingerprint=completion.system_fingerprint,
        )

    chunks = []
    for choice in completion.choices:
        message, i = choice.message, choice.index
        chunks.append(chunk([ChunkChoice(i, Delta(role="assistant", content=""))]))
        if message.content:
            # The whole content in one chunk, so its logprobs travel with it.
            chunks.append(chunk([ChunkChoice(i, Delta(content=message.content), logprobs=choice.logprobs)]))
        if message.refusal:
            logprobs = None if message.content else choice.logprobs
            chunks.append(chunk([ChunkChoice(i, Delta(refusal=message.refusal), logprobs=logprobs)]))
        for n, call in enumerate(message.tool_calls or ()):
            function = ChunkFunction(name=call.function.name, arguments=call.function.arguments)
            delta = Delta(tool_calls=[ChunkToolCall(index=n, id=call.id, type="function", function=function)])
            chunks.append(chunk([ChunkChoice(i, delta)]))
        chunks.append(chunk([ChunkChoice(i, Delta(), finish_reason=choice.finish_reason or "stop")]))
    if include_usage:
        chunks.append(chunk([], completion.usage or Usage()))
    return chunks
