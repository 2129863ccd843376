"""The fake upstream answers `response_format` with JSON the schema accepts, and `logprobs`."""

from __future__ import annotations

import enum
from collections.abc import Iterator
from typing import Any, Literal

import httpx
import openai
import pytest
from pydantic import BaseModel, Field, TypeAdapter

from edge_agent.fake_upstream import BackgroundServer
from edge_agent.fake_upstream.schema import instance


class Colour(enum.Enum):
    red = "red"
    blue = "blue"


class Address(BaseModel):
    street: str
    number: int = Field(ge=10, lt=20)
    tags: list[str] = Field(min_length=2)


class Person(BaseModel):
    name: str
    age: int
    height_m: float
    member: bool
    colour: Colour
    kind: Literal["human", "robot"]
    home: Address
    previous: list[Address]
    nickname: str | None
    email: str = Field(json_schema_extra={"format": "email"})


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-test", max_retries=0)


def test_instances_validate_against_pydantic_schemas() -> None:
    for model in (Person, Address):
        value = instance(model.model_json_schema(), "Who is it?")
        model.model_validate(value)
    assert instance(Person.model_json_schema(), "Who is it?") == instance(
        Person.model_json_schema(), "Who is it?"
    )  # deterministic


@pytest.mark.parametrize(
    ("schema", "valid"),
    [
        ({"type": "string", "minLength": 30}, lambda v: isinstance(v, str) and len(v) >= 30),
        ({"type": "string", "maxLength": 3}, lambda v: isinstance(v, str) and len(v) <= 3),
        ({"type": "integer", "exclusiveMinimum": 5}, lambda v: isinstance(v, int) and v > 5),
        ({"type": "number", "maximum": -2}, lambda v: v <= -2),
        ({"type": "array", "items": {"type": "boolean"}, "minItems": 3}, lambda v: v == [True] * 3),
        ({"type": ["null", "integer"]}, lambda v: isinstance(v, int)),
        ({"const": 7}, lambda v: v == 7),
        ({"type": "string", "format": "date-time"}, lambda v: v == "2024-01-01T00:00:00Z"),
        (
            {
                "allOf": [
                    {"$ref": "#/$defs/a"},
                    {"properties": {"b": {"type": "integer"}}, "required": ["b"]},
                ],
                "$defs": {"a": {"properties": {"a": {"type": "boolean"}}, "required": ["a"]}},
            },
            lambda v: v == {"a": True, "b": 1},
        ),
    ],
)
def test_instances_keep_bounds_and_combinators(schema: dict[str, Any], valid: Any) -> None:
    assert valid(instance(schema, "hello")), instance(schema, "hello")


def test_a_recursive_schema_ends() -> None:
    class Node(BaseModel):
        label: str
        children: list[Node] = []

    Node.model_validate(instance(Node.model_json_schema(), "tree"))


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Describe someone"}],
        response_format=Person,
    )
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and person.home.number >= 10 and len(person.home.tags) >= 2


def test_json_object_and_streamed_json_schema(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "json please"}],
        response_format={"type": "json_object"},
    )
    assert isinstance(
        TypeAdapter(dict[str, Any]).validate_json(answer.choices[0].message.content or ""), dict
    )
    schema = Address.model_json_schema()
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "an address"}],
        response_format={"type": "json_schema", "json_schema": {"name": "address", "schema": schema}},
        stream=True,
    )
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 1
    Address.model_validate_json("".join(pieces))


def test_logprobs_streamed_and_not(client: openai.OpenAI) -> None:
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello there"}]}
    answer = client.chat.completions.create(**ask, logprobs=True, top_logprobs=3)  # type: ignore[call-overload]
    entries = answer.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == answer.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and e.bytes == list(e.token.encode()) and len(e.top_logprobs) == 3
        assert e.top_logprobs[0].token == e.token
        assert [t.logprob for t in e.top_logprobs] == sorted(
            (t.logprob for t in e.top_logprobs), reverse=True
        )
    stream = client.chat.completions.create(**ask, logprobs=True, stream=True)  # type: ignore[call-overload]
    streamed = [
        entry
        for chunk in stream
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]
    assert [(e.token, e.logprob) for e in streamed] == [(e.token, e.logprob) for e in entries]
    assert client.chat.completions.create(**ask).choices[0].logprobs is None  # type: ignore[call-overload]


def test_anthropic_forced_tool_input_satisfies_its_schema(server: BackgroundServer) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Describe someone"}],
        "tools": [{"name": "response_format__person", "input_schema": Person.model_json_schema()}],
        "tool_choice": {"type": "tool", "name": "response_format__person"},
    }
    headers = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"}
    answer = httpx.post(f"{server.url}/v1/messages", json=body, headers=headers, timeout=10).json()
    (block,) = answer["content"]
    assert block["type"] == "tool_use" and block["name"] == "response_format__person"
    Person.model_validate(block["input"])
