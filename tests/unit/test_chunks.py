"""shared/chunks.py: assembling a stream into a completion, and replaying a completion as a stream."""

from __future__ import annotations

import msgspec
import openai.types.chat as openai_types
import pytest

from shared.chunks import ChunkAssembler, replay_chunks
from shared.wire import ChatCompletion as Completion
from shared.wire import ChatCompletionChunk as Chunk
from shared.wire import (
    Choice,
    ChunkChoice,
    ChunkFunction,
    Delta,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
)
from shared.wire import ChunkToolCall as ToolDelta

ID, CREATED, MODEL = "chatcmpl-1", 1_700_000_000, "gpt-4o-2024-08-06"
_encode = msgspec.json.Encoder().encode


def chunk(*choices: ChunkChoice, usage: Usage | None = None, fingerprint: str | None = None) -> Chunk:
    return Chunk(ID, CREATED, MODEL, list(choices), usage=usage, system_fingerprint=fingerprint)


def text(index: int, content: str) -> ChunkChoice:
    return ChunkChoice(index, Delta(content=content))


def finish(index: int, reason: str = "stop") -> ChunkChoice:
    return ChunkChoice(index, Delta(), finish_reason=reason)


def call(index: int, id: str | None = None, name: str | None = None, args: str | None = None) -> ToolDelta:
    function = ChunkFunction(name=name, arguments=args) if name is not None or args is not None else None
    return ToolDelta(index=index, id=id, type="function" if id else None, function=function)


def assemble(chunks: list[Chunk]) -> ChunkAssembler:
    assembler = ChunkAssembler()
    for c in chunks:
        assembler.add(c)
    return assembler


def completion(*choices: Choice, usage: Usage | None = None, fingerprint: str | None = None) -> Completion:
    return Completion(ID, CREATED, MODEL, list(choices), usage=usage, system_fingerprint=fingerprint)


# ---- ChunkAssembler -----------------------------------------------------------------------------


def test_content_deltas_are_joined_with_usage_and_fingerprint() -> None:
    assembler = assemble(
        [
            chunk(ChunkChoice(0, Delta(role="assistant", content="")), fingerprint="fp_1"),
            chunk(text(0, "Hel")),
            chunk(text(0, "lo, ")),
            chunk(text(0, "world")),
            chunk(finish(0)),
            chunk(usage=Usage(prompt_tokens=9, completion_tokens=4, total_tokens=13)),
        ]
    )
    assert assembler.complete
    assert assembler.usage == Usage(9, 4, 13)
    assert assembler.completion() == completion(
        Choice(0, ResponseMessage(content="Hello, world"), "stop"),
        usage=Usage(9, 4, 13),
        fingerprint="fp_1",  # said once, in the first chunk only
    )


def test_a_later_fingerprint_and_usage_survive_chunks_without_them() -> None:
    assembler = assemble(
        [
            chunk(text(0, "a")),
            chunk(text(0, "b"), usage=Usage(1, 2, 3), fingerprint="fp_2"),
            chunk(finish(0, "length")),
        ]
    )
    assert assembler.completion() == completion(
        Choice(0, ResponseMessage(content="ab"), "length"), usage=Usage(1, 2, 3), fingerprint="fp_2"
    )


def test_no_usage_chunk_means_no_usage() -> None:
    assembler = assemble([chunk(text(0, "a")), chunk(finish(0))])
    assert assembler.usage is None and assembler.completion().usage is None


def test_a_refusal_is_joined_apart_from_content() -> None:
    assembler = assemble(
        [
            chunk(ChunkChoice(0, Delta(role="assistant", content=""))),
            chunk(ChunkChoice(0, Delta(refusal="I can't "))),
            chunk(ChunkChoice(0, Delta(refusal="help with that."))),
            chunk(finish(0)),
        ]
    )
    # As a non-streamed refusal says it: content null, the text in `refusal`.
    assert assembler.completion() == completion(
        Choice(0, ResponseMessage(content=None, refusal="I can't help with that."), "stop")
    )


def test_an_empty_answer_has_empty_content_not_null() -> None:
    assembler = assemble([chunk(ChunkChoice(0, Delta(role="assistant", content=""))), chunk(finish(0))])
    assert assembler.completion() == completion(Choice(0, ResponseMessage(content=""), "stop"))


def test_several_choices_interleaved_and_out_of_order_come_out_sorted_by_index() -> None:
    assembler = assemble(
        [
            chunk(text(2, "C1")),
            chunk(text(0, "A1"), text(1, "B1")),
            chunk(text(1, "B2")),
            chunk(text(0, "A2"), text(2, "C2")),
            chunk(finish(1, "length")),
            chunk(finish(2), finish(0)),
        ]
    )
    assert assembler.completion().choices == [
        Choice(0, ResponseMessage(content="A1A2"), "stop"),
        Choice(1, ResponseMessage(content="B1B2"), "length"),
        Choice(2, ResponseMessage(content="C1C2"), "stop"),
    ]


def test_tool_calls_are_assembled_from_fragments() -> None:
    # The id, type and name come in a call's first fragment; its arguments in pieces afterwards,
    # two calls' pieces interleaved and sometimes in one delta, the second call announced first.
    assembler = assemble(
        [
            chunk(ChunkChoice(0, Delta(role="assistant", content=None))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(1, id="call_b", name="get_time", args="")]))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(0, id="call_a", name="get_weather", args="")]))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(0, args='{"ci')]))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(1, args='{"tz":'), call(0, args='ty": "Os')]))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(0, args='lo"}')]))),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(1, args=' "CET"}')]))),
            chunk(finish(0, "tool_calls")),
        ]
    )
    assert assembler.complete
    assert assembler.completion().choices == [
        Choice(
            0,
            ResponseMessage(
                content=None,  # as a non-streamed tool call says it
                tool_calls=[
                    ToolCall("call_a", FunctionCall("get_weather", '{"city": "Oslo"}')),
                    ToolCall("call_b", FunctionCall("get_time", '{"tz": "CET"}')),
                ],
            ),
            "tool_calls",
        )
    ]


def test_text_before_a_tool_call_is_kept() -> None:
    assembler = assemble(
        [
            chunk(text(0, "Let me look.")),
            chunk(ChunkChoice(0, Delta(tool_calls=[call(0, id="call_a", name="f", args="{}")]))),
            chunk(finish(0, "tool_calls")),
        ]
    )
    (choice,) = assembler.completion().choices
    assert choice.message == ResponseMessage(
        content="Let me look.", tool_calls=[ToolCall("call_a", FunctionCall("f", "{}"))]
    )


def test_complete_only_when_every_choice_has_its_finish_reason() -> None:
    assembler = ChunkAssembler()
    assert not assembler.complete  # nothing at all is not a complete answer
    assembler.add(chunk(text(0, "a"), text(1, "b")))
    assert not assembler.complete
    assembler.add(chunk(finish(0)))
    assert not assembler.complete  # choice 1 was cut
    assembler.add(chunk(usage=Usage(1, 1, 2)))
    assert not assembler.complete
    assembler.add(chunk(finish(1)))
    assert assembler.complete


# ---- replay_chunks ------------------------------------------------------------------------------

RICH = completion(
    Choice(0, ResponseMessage(content="Hello there."), "stop"),
    Choice(
        1,
        ResponseMessage(
            content=None,
            tool_calls=[
                ToolCall("call_a", FunctionCall("get_weather", '{"city": "Oslo"}')),
                ToolCall("call_b", FunctionCall("get_time", "{}")),
            ],
        ),
        "tool_calls",
    ),
    Choice(2, ResponseMessage(content=None, refusal="I can't help with that."), "stop"),
    Choice(3, ResponseMessage(content="Cut sh"), "length"),
    usage=Usage(prompt_tokens=20, completion_tokens=31, total_tokens=51),
    fingerprint="fp_9",
)


def test_replay_then_assembly_gives_back_the_completion() -> None:
    chunks = replay_chunks(_encode(RICH), include_usage=True)
    assert chunks[-1].choices == [] and chunks[-1].usage == RICH.usage
    assert all(c.usage is None for c in chunks[:-1])
    assert assemble(chunks).completion() == RICH


def test_replay_without_usage_has_no_usage_chunk() -> None:
    chunks = replay_chunks(_encode(RICH), include_usage=False)
    assert all(c.usage is None and c.choices for c in chunks)
    assert assemble(chunks).completion() == msgspec.structs.replace(RICH, usage=None)


def test_replay_asked_for_usage_of_a_completion_without_it_sends_zero_usage() -> None:
    plain = completion(Choice(0, ResponseMessage(content="hi"), "stop"))
    chunks = replay_chunks(_encode(plain), include_usage=True)
    assert chunks[-1].choices == [] and chunks[-1].usage == Usage(0, 0, 0)


def test_replayed_chunks_look_like_openais() -> None:
    chunks = replay_chunks(_encode(RICH), include_usage=True)
    for c in chunks:
        assert (c.id, c.created, c.model, c.system_fingerprint) == (ID, CREATED, MODEL, "fp_9")
        assert c.object == "chat.completion.chunk"
        # The OpenAI SDK's own type accepts each chunk as the gateway writes it.
        openai_types.ChatCompletionChunk.model_validate_json(_encode(c))
    starts = [c.choices[0] for c in chunks if c.choices and c.choices[0].delta.role == "assistant"]
    assert [s.index for s in starts] == [0, 1, 2, 3]  # each choice opens with its role
    firsts = [c.choices[0] for c in chunks if c.choices]
    finishes = [(f.index, f.finish_reason) for f in firsts if f.finish_reason is not None]
    assert finishes == [(0, "stop"), (1, "tool_calls"), (2, "stop"), (3, "length")]
    tool_deltas = [f.delta.tool_calls for f in firsts if f.delta.tool_calls]
    assert [[(t.index, t.id, t.type) for t in d] for d in tool_deltas] == [
        [(0, "call_a", "function")],
        [(1, "call_b", "function")],
    ]


def test_a_replay_parsed_by_the_openai_sdk_assembles_to_the_same_message() -> None:
    plain = completion(Choice(0, ResponseMessage(content="Hello there."), "stop"), usage=Usage(1, 2, 3))
    sdk_chunks = [
        openai_types.ChatCompletionChunk.model_validate_json(_encode(c))
        for c in replay_chunks(_encode(plain), include_usage=True)
    ]
    assert "".join(c.choices[0].delta.content or "" for c in sdk_chunks if c.choices) == "Hello there."
    assert sdk_chunks[-1].usage is not None and sdk_chunks[-1].usage.total_tokens == 3


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"error": {"message": "boom", "type": "server_error"}}', msgspec.ValidationError),
        (b'{"id": "x", "created": 1, "model": "m"}', msgspec.ValidationError),
        (b'{"id": "x", "created": 1, "model": "m", "choices": [{"index": 0}]}', msgspec.ValidationError),
        (b"not json", msgspec.DecodeError),
        (b"", msgspec.DecodeError),
    ],
    ids=["error-envelope", "no-choices", "choice-without-message", "not-json", "empty"],
)
def test_replay_of_something_that_is_not_a_completion_raises_msgspec_errors(
    body: bytes, error: type[Exception]
) -> None:
    with pytest.raises(error):
        replay_chunks(body, include_usage=False)


def test_replay_error_names_the_missing_field() -> None:
    with pytest.raises(msgspec.ValidationError, match="choices"):
        replay_chunks(b'{"id": "x", "created": 1, "model": "m"}', include_usage=True)
