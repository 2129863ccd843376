"""The fake upstream's Gemini and Azure OpenAI APIs, checked with the official clients: if
google-genai and openai.AzureOpenAI can talk to it, it speaks what the real services speak."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from edge_agent.fake_upstream import BackgroundServer

KEY = "fake-key"


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(require_key=KEY) as srv:
        yield srv


def gemini(server: BackgroundServer, key: str = KEY) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=server.url, retry_options=None))


def test_gemini_generate_content_with_google_genai(server: BackgroundServer) -> None:
    client = gemini(server)
    answer = client.models.generate_content(
        model="gemini-2.5-flash",
        contents=["Say something [[fake:words=5]]"],
        config=types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=100),
    )
    assert answer.text is not None and len(answer.text.split()) == 5
    assert answer.candidates and answer.candidates[0].finish_reason == types.FinishReason.STOP
    assert answer.usage_metadata and answer.usage_metadata.candidates_token_count == 5
    assert answer.model_version == "gemini-2.5-flash"


def test_gemini_stream_tools_and_structured_output(server: BackgroundServer) -> None:
    client = gemini(server)
    pieces = list(
        client.models.generate_content_stream(model="gemini-2.5-flash", contents="Stream [[fake:words=6]]")
    )
    assert len("".join(p.text or "" for p in pieces).split()) == 6
    assert pieces[-1].candidates and pieces[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert pieces[-1].usage_metadata and pieces[-1].usage_metadata.total_token_count

    weather = types.FunctionDeclaration(
        name="get_weather",
        parameters=types.Schema(
            type=types.Type.OBJECT,
            properties={"city": types.Schema(type=types.Type.STRING)},
            required=["city"],
        ),
    )
    config = types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[weather])],
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
    )
    called = client.models.generate_content(
        model="gemini-2.5-flash", contents="weather in Paris", config=config
    )
    assert called.function_calls and called.function_calls[0].name == "get_weather"
    assert isinstance((called.function_calls[0].args or {}).get("city"), str)

    schema = types.Schema(
        type=types.Type.OBJECT, properties={"n": types.Schema(type=types.Type.INTEGER)}, required=["n"]
    )
    structured = client.models.generate_content(
        model="gemini-2.5-flash",
        contents="a number",
        config=types.GenerateContentConfig(response_mime_type="application/json", response_schema=schema),
    )
    assert structured.text is not None and isinstance(json.loads(structured.text)["n"], int)


def test_gemini_errors_as_google_speaks_them(server: BackgroundServer) -> None:
    client, wrong = gemini(server), gemini(server, key="wrong")  # held: a dropped client closes
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(
            model="gemini-2.5-flash", contents="x [[fake:status=429]] [[fake:retry_after=3]]"
        )
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    details = info.value.details["error"]["details"]
    assert details[0]["retryDelay"] == "3s"
    with pytest.raises(genai_errors.ClientError) as info:
        wrong.models.generate_content(model="gemini-2.5-flash", contents="x")
    assert info.value.code == 400 and "API key not valid" in (info.value.message or "")
    # Like the real service, unknown fields are refused: a worker sending one fails in tests.
    raw = httpx.post(
        f"{server.url}/v1beta/models/gemini-2.5-flash:generateContent",
        headers={"x-goog-api-key": KEY},
        json={"contents": [{"role": "user", "parts": [{"text": "x"}]}], "generationConfig": {"maxTokens": 3}},
    )
    assert raw.status_code == 400 and 'Unknown name "maxTokens"' in raw.json()["error"]["message"]


def test_azure_deployment_url_with_azure_openai_client(server: BackgroundServer) -> None:
    client = openai.AzureOpenAI(
        azure_endpoint=server.url, api_key=KEY, api_version="2024-10-21", max_retries=0
    )
    answer = client.chat.completions.create(
        model="my-gpt4o", messages=[{"role": "user", "content": "hi [[fake:words=3]]"}]
    )
    assert answer.choices[0].message.content and len(answer.choices[0].message.content.split()) == 3
    stream = client.chat.completions.create(
        model="my-gpt4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices == [] and chunks[0].id == ""  # Azure's prompt_filter_results chunk
    assert chunks[-1].usage is not None
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="my-gpt4o", messages=[{"role": "user", "content": "[[fake:status=429]]"}]
        )
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.body["code"] == "429"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="my-gpt4o", messages=[{"role": "user", "content": "[[fake:blocked=prompt]]"}]
        )
    assert info.value.code == "content_filter"
    with pytest.raises(openai.AuthenticationError):
        openai.AzureOpenAI(
            azure_endpoint=server.url, api_key="wrong", api_version="2024-10-21", max_retries=0
        ).chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}])


def test_azure_v1_url_and_bearer_token(server: BackgroundServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=KEY, max_retries=0)  # bearer
    answer = client.chat.completions.create(model="my-gpt4o", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "my-gpt4o" and answer.choices[0].finish_reason == "stop"
    missing_version = httpx.post(
        f"{server.url}/openai/deployments/d/chat/completions", headers={"api-key": KEY}, json={"messages": []}
    )
    assert missing_version.status_code == 404
