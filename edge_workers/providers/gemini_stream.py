"""Gemini `streamGenerateContent?alt=sse` events -> OpenAI `chat.completion.chunk`s.

Each event is a whole GenerateContentResponse carrying the next piece of each candidate. The
translator is pure (no I/O). Decisions, mirroring the non-streaming `to_chat_completion`:

- A candidate's first event opens its choice with the assistant role; text parts become
  content deltas; a function call (Gemini sends each whole) becomes one tool_calls delta with
  all its arguments, numbered 0, 1, ... per choice. Thought parts are skipped.
- A candidate's finishReason closes its choice; when every candidate seen has finished, the
  stream is complete and one usage-only chunk follows (the last usageMetadata, which Gemini
  sends with the final event), as OpenAI's include_usage does.
- A prompt blocked before any answer is a 400 `content_filter`; an `{"error": ...}` event is
  the stream's failure, in OpenAI's terms.
"""

from __future__ import annotations

import msgspec

from edge_workers.providers import gemini_wire as gw
from edge_workers.providers.base import StreamError, completion_id
from edge_workers.providers.gemini_wire import (
    blocked_prompt,
    map_error,
    map_finish_reason,
    map_usage,
    tool_call_of,
)
from shared.wire import (
    ChatCompletionChunk,
    ChunkChoice,
    ChunkFunction,
    ChunkToolCall,
    Delta,
    ErrorDetail,
    Usage,
)

_encode = msgspec.json.Encoder().encode


class _Choice:
    __slots__ = ("calls", "finished")

    def __init__(self) -> None:
        self.calls = 0
        self.finished = False


class GeminiChunkStream:
    def __init__(self, created: int) -> None:
        self.created = created
        self.id = completion_id()
        self.model = ""
        self.usage: Usage | None = None
        self._choices: dict[int, _Choice] = {}
        self._done = False

    @property
    def finished(self) -> bool:
        return self._done

    def _chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.id, created=self.created, model=self.model, choices=choices, usage=usage
        )

    def feed(self, event: str, data: bytes) -> list[tuple[bytes, ChatCompletionChunk]]:
        try:
            answer = gw.decode_response(data)
        except msgspec.DecodeError:
            raise StreamError(
                ErrorDetail("upstream sent a malformed stream event", "upstream_error"), 502
            ) from None
        if not answer.candidates and answer.usage_metadata is None and answer.prompt_feedback is None:
            self._raise_error(data)
        blocked = blocked_prompt(answer.prompt_feedback)
        if blocked is not None:
            raise StreamError(
                ErrorDetail(blocked.message, "invalid_request_error", code="content_filter"), 400
            )
        if answer.model_version:
            self.model = answer.model_version
        if answer.usage_metadata is not None:
            self.usage = map_usage(answer.usage_metadata)
        chunks = [self._chunk([c]) for candidate in answer.candidates for c in self._deltas(candidate)]
        if not self._done and self._choices and all(c.finished for c in self._choices.values()):
            self._done = True
            chunks.append(self._chunk([], self.usage or Usage()))
        return [(_encode(chunk), chunk) for chunk in chunks]

    def _deltas(self, candidate: gw.Candidate) -> list[ChunkChoice]:
        i = candidate.index
        state = self._choices.get(i)
        out: list[ChunkChoice] = []
        if state is None:
            state = self._choices[i] = _Choice()
            out.append(ChunkChoice(i, Delta(role="assistant", content="")))
        for part in candidate.content.parts if candidate.content else ():
            if part.thought:
                continue
            if part.text:
                out.append(ChunkChoice(i, Delta(content=part.text)))
            elif part.function_call is not None:
                call = tool_call_of(part)
                function = ChunkFunction(name=call.function.name, arguments=call.function.arguments)
                delta = ChunkToolCall(index=state.calls, id=call.id, type="function", function=function)
                out.append(ChunkChoice(i, Delta(tool_calls=[delta])))
                state.calls += 1
        finish = map_finish_reason(candidate.finish_reason, state.calls > 0)
        if finish is not None and not state.finished:
            state.finished = True
            out.append(ChunkChoice(i, Delta(), finish_reason=finish))
        return out

    @staticmethod
    def _raise_error(data: bytes) -> None:
        try:
            error = gw.decode_maybe_error(data).error
        except msgspec.DecodeError:
            error = None
        if error is None:
            return  # an empty event: nothing to forward
        status = error.code if 400 <= error.code < 600 else 502
        raise StreamError(map_error(status, error), status)
