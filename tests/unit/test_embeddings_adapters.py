"""Embeddings: request validation, the base64 form, cache keys, and each adapter's requests and
answers (pure functions; the wire is tested end to end in tests/integration/test_embeddings.py)."""

from __future__ import annotations

import base64
import struct

import msgspec
import pytest

from edge_front.embeddings import parse_embeddings_request
from edge_workers.providers.embeddings import EMBEDDERS, EmbeddingsCall
from shared.cache_keys import cache_key
from shared.config import Deployment
from shared.embeddings_wire import EMBEDDINGS_API, from_base64, input_shape, to_base64
from shared.errors import EdgeError

decode = msgspec.json.decode


def deployment(provider: str, base_url: str, **extra: object) -> Deployment:
    return Deployment("m", provider, "up-model", base_url, "K", id="m#0", **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "shape"),
    [("a", "text"), (["a", "b"], "texts"), ([1, 2], "tokens"), ([[1], [2, 3]], "token_lists")],
)
def test_the_four_input_shapes(value: object, shape: str) -> None:
    assert input_shape(value) == shape  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "param"),
    [
        ("", "input"),
        ([], "input"),
        (["a", ""], "input[1]"),
        ([1, "a"], "input[1]"),
        ([1, -2], "input[1]"),
        ([[1], "a"], "input[1]"),
        ([True], "input"),
        ([{"a": 1}], "input"),
        (["x"] * 2049, "input"),
    ],
)
def test_bad_inputs_name_their_element(value: object, param: str) -> None:
    with pytest.raises(EdgeError) as refused:
        input_shape(value)  # type: ignore[arg-type]
    assert refused.value.status == 400 and refused.value.param == param


def test_base64_is_little_endian_float32_both_ways() -> None:
    vector = [0.5, -1.25, 3.0, 1e-3]
    raw = base64.b64decode(to_base64(vector))
    assert raw == struct.pack("<4f", *vector)
    assert from_base64(to_base64(vector)) == list(struct.unpack("<4f", raw))


def test_cache_keys_keep_apis_and_tenants_apart_and_default_the_encoding() -> None:
    body = {"model": "m", "input": "x", "messages": [{"role": "user", "content": "x"}]}
    assert cache_key(body, "ns", EMBEDDINGS_API) != cache_key(body, "ns")
    assert cache_key(body, "a", EMBEDDINGS_API) != cache_key(body, "b", EMBEDDINGS_API)
    plain = msgspec.json.encode({"model": "m", "input": "x"})
    floats = msgspec.json.encode({"model": "m", "input": "x", "encoding_format": "float"})
    b64 = msgspec.json.encode({"model": "m", "input": "x", "encoding_format": "base64"})
    keys = [cache_key(parse_embeddings_request(b)[0], "ns", EMBEDDINGS_API) for b in (plain, floats, b64)]
    assert keys[0] == keys[1] != keys[2]


@pytest.mark.parametrize(
    ("base_url", "version", "url"),
    [
        (
            "https://r.openai.azure.com",
            None,
            "https://r.openai.azure.com/openai/deployments/up-model/embeddings?api-version=2024-10-21",
        ),
        (
            "https://r.openai.azure.com",
            "2024-06-01",
            "https://r.openai.azure.com/openai/deployments/up-model/embeddings?api-version=2024-06-01",
        ),
        ("https://r.openai.azure.com", "v1", "https://r.openai.azure.com/openai/v1/embeddings"),
        ("https://r.openai.azure.com/openai/v1", None, "https://r.openai.azure.com/openai/v1/embeddings"),
    ],
)
def test_azure_url_forms(base_url: str, version: str | None, url: str) -> None:
    call = EmbeddingsCall({"model": "m", "input": "x"}, "up-model")
    [request] = EMBEDDERS["azure"].build_requests(
        call, deployment("azure", base_url, api_version=version), "sk-az"
    )
    assert request.url == url
    assert request.headers["api-key"] == "sk-az" and "Authorization" not in request.headers
    [bearer] = EMBEDDERS["azure"].build_requests(call, deployment("azure", base_url, auth="bearer"), "tok")
    assert bearer.headers["Authorization"] == "Bearer tok" and "api-key" not in bearer.headers


def test_openai_passes_the_body_and_the_answer_through() -> None:
    call = EmbeddingsCall({"model": "m", "input": [1, 2], "dimensions": 8, "extra": True}, "up-model")
    [request] = EMBEDDERS["openai"].build_requests(call, deployment("openai", "http://u/v1"), "sk")
    assert request.url == "http://u/v1/embeddings" and request.headers["Authorization"] == "Bearer sk"
    assert decode(request.body) == {"model": "up-model", "input": [1, 2], "dimensions": 8, "extra": True}
    answer = (
        b'{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,0.25]}],'
        b'"model":"up-model","usage":{"prompt_tokens":2,"total_tokens":2}}'
    )
    assert EMBEDDERS["openai"].parse_answers(call, [(answer, {})]) == (answer, 2)


def test_a_server_that_ignored_base64_is_converted() -> None:
    call = EmbeddingsCall({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}, "up-model")
    answer = (
        b'{"object":"list","data":[{"object":"embedding","index":1,"embedding":[1.0]},'
        b'{"object":"embedding","index":0,"embedding":[0.5]}],"model":"x"}'
    )
    body, tokens = EMBEDDERS["openai"].parse_answers(call, [(answer, {})])
    data = decode(body)["data"]
    assert [from_base64(d["embedding"]) for d in data] == [[0.5], [1.0]] and tokens == 0


@pytest.mark.parametrize(
    "bad", [b"<html>", b'{"error": {"message": "busy", "type": "server_error"}}', b'{"data": 1}']
)
def test_a_2xx_that_is_not_embeddings_is_a_502(bad: bytes) -> None:
    call = EmbeddingsCall({"model": "m", "input": "a"}, "up-model")
    with pytest.raises(EdgeError) as failed:
        EMBEDDERS["openai"].parse_answers(call, [(bad, {})])
    assert failed.value.status == 502


def test_gemini_splits_batches_of_100_and_refuses_tokens() -> None:
    gemini = EMBEDDERS["gemini"]
    d = deployment("gemini", "https://g/v1beta")
    texts = [f"t{i}" for i in range(250)]
    call = EmbeddingsCall(
        {"model": "m", "input": texts, "dimensions": 8, "task_type": "RETRIEVAL_QUERY"},
        "gemini-embedding-001",
    )
    requests = gemini.build_requests(call, d, "gk")
    assert [r.url for r in requests] == [
        "https://g/v1beta/models/gemini-embedding-001:batchEmbedContents"
    ] * 3
    assert requests[0].headers["x-goog-api-key"] == "gk"
    bodies = [decode(r.body)["requests"] for r in requests]
    assert [len(b) for b in bodies] == [100, 100, 50]
    assert bodies[2][-1] == {
        "model": "models/gemini-embedding-001",
        "content": {"parts": [{"text": "t249"}]},
        "outputDimensionality": 8,
        "taskType": "RETRIEVAL_QUERY",
    }
    answers = [
        (msgspec.json.encode({"embeddings": [{"values": [float(i)]} for i in range(n)]}), {})
        for n in (100, 100, 50)
    ]
    body, tokens = gemini.parse_answers(call, answers)
    data = decode(body)["data"]
    assert [d["index"] for d in data] == list(range(250)) and data[249]["embedding"] == [49.0]
    assert tokens == sum(-(-len(t) // 4) for t in texts)  # the chat path's estimate: 4 characters a token
    single = EmbeddingsCall({"model": "m", "input": "one"}, "models/gemini-embedding-001")
    [request] = gemini.build_requests(single, d, "gk")
    assert request.url.endswith("/models/gemini-embedding-001:embedContent")
    assert decode(request.body) == {"content": {"parts": [{"text": "one"}]}}
    with pytest.raises(EdgeError) as refused:
        gemini.build_requests(EmbeddingsCall({"model": "m", "input": [[1]]}, "g"), d, "gk")
    assert refused.value.status == 400 and refused.value.param == "input"


def test_gemini_errors_keep_googles_message_and_status() -> None:
    detail = EMBEDDERS["gemini"].parse_error(
        429, b'{"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}'
    )
    assert (detail.message, detail.type, detail.code) == (
        "Quota exceeded",
        "rate_limit_error",
        "rate_limit_exceeded",
    )
    assert EMBEDDERS["gemini"].parse_error(502, b"bad gateway").type == "upstream_error"


def test_a_count_mismatch_is_a_502() -> None:
    call = EmbeddingsCall({"model": "m", "input": ["a", "b"]}, "g")
    with pytest.raises(EdgeError) as failed:
        EMBEDDERS["gemini"].parse_answers(call, [(b'{"embeddings": [{"values": [1.0]}]}', {})])
    assert failed.value.status == 502


@pytest.fixture(autouse=True)
def fresh_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers resolve AWS credentials once per process: each test here sets its own."""
    from edge_workers.providers import bedrock_auth

    monkeypatch.setattr(bedrock_auth, "_sources", {})
    monkeypatch.setattr(bedrock_auth, "_providers", {})
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def test_bedrock_titan_is_one_signed_call_per_text(aws: None) -> None:
    d = deployment("bedrock", "https://bedrock-runtime.eu-west-1.amazonaws.com")
    call = EmbeddingsCall(
        {"model": "m", "input": ["a", "b"], "dimensions": 512}, "amazon.titan-embed-text-v2:0"
    )
    requests = EMBEDDERS["bedrock"].build_requests(call, d, "")
    url = "https://bedrock-runtime.eu-west-1.amazonaws.com/model/amazon.titan-embed-text-v2%3A0/invoke"
    assert [r.url for r in requests] == [url, url] and all(r.encoded for r in requests)
    assert [decode(r.body) for r in requests] == [
        {"inputText": "a", "dimensions": 512},
        {"inputText": "b", "dimensions": 512},
    ]
    auth = requests[0].headers["Authorization"]
    assert (
        auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
        and "/eu-west-1/bedrock/aws4_request" in auth
    )
    answers = [
        (b'{"embedding": [0.5], "inputTextTokenCount": 3}', {}),
        (b'{"embedding": [1.0], "inputTextTokenCount": 4}', {}),
    ]
    body, tokens = EMBEDDERS["bedrock"].parse_answers(call, answers)
    assert [e["embedding"] for e in decode(body)["data"]] == [[0.5], [1.0]] and tokens == 7
    with pytest.raises(EdgeError):  # v1 has a fixed size
        EMBEDDERS["bedrock"].build_requests(
            EmbeddingsCall({"model": "m", "input": "a", "dimensions": 8}, "amazon.titan-embed-text-v1"), d, ""
        )


def test_bedrock_cohere_batches_96_and_maps_its_options(aws: None) -> None:
    d = deployment("bedrock", "https://bedrock-runtime.us-east-1.amazonaws.com")
    texts = [f"t{i}" for i in range(100)]
    call = EmbeddingsCall(
        {"model": "m", "input": texts, "input_type": "search_query", "dimensions": 256},
        "us.cohere.embed-v4:0",
    )
    requests = EMBEDDERS["bedrock"].build_requests(call, d, "")
    bodies = [decode(r.body) for r in requests]
    assert [len(b["texts"]) for b in bodies] == [96, 4]
    assert bodies[1] == {"texts": texts[96:], "input_type": "search_query", "output_dimension": 256}
    answers = [
        (
            msgspec.json.encode({"embeddings": {"float": [[1.0]] * 96}}),
            {"X-Amzn-Bedrock-Input-Token-Count": "96"},
        ),
        (msgspec.json.encode({"embeddings": [[2.0]] * 4}), {"X-Amzn-Bedrock-Input-Token-Count": "8"}),
    ]
    body, tokens = EMBEDDERS["bedrock"].parse_answers(call, answers)
    assert len(decode(body)["data"]) == 100 and tokens == 104
    v3 = EmbeddingsCall({"model": "m", "input": "a"}, "cohere.embed-english-v3")
    assert decode(EMBEDDERS["bedrock"].build_requests(v3, d, "")[0].body)["input_type"] == "search_document"
    with pytest.raises(EdgeError) as refused:
        EMBEDDERS["bedrock"].build_requests(
            EmbeddingsCall({"model": "m", "input": "a"}, "amazon.nova-lite-v1:0"), d, ""
        )
    assert refused.value.param == "model"


def test_the_fake_bedrock_refuses_a_signature_over_another_body(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp.test_utils import make_mocked_request

    from edge_agent.fake_upstream.bedrock_embeddings import (
        FAKE_ACCESS_KEY_ID,
        FAKE_SECRET_ACCESS_KEY,
        signature_problem,
    )

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET_ACCESS_KEY)
    d = deployment("bedrock", "http://127.0.0.1:9")
    call = EmbeddingsCall({"model": "m", "input": "a"}, "amazon.titan-embed-text-v2:0")
    [signed] = EMBEDDERS["bedrock"].build_requests(call, d, "")
    path = signed.url.removeprefix("http://127.0.0.1:9")
    request = make_mocked_request("POST", path, headers={**signed.headers, "Host": "127.0.0.1:9"})
    assert signature_problem(request, signed.body) is None
    assert signature_problem(request, signed.body + b" ") is not None
