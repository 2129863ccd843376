"""/v1/embeddings through real processes: the official openai SDK (`client.embeddings.create`)
against a front, openai/azure/gemini workers and the fake upstream, which answers each
provider's own wire format with vectors derived from the input's text (`vector_for`), so every
test can check order, dimensions and base64 decoding exactly."""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from edge_agent.devstack import MASTER_KEY, DevStack, Front
from edge_agent.fake_upstream.bedrock_embeddings import FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY
from edge_agent.fake_upstream.content import strip_markers
from edge_agent.fake_upstream.embeddings import dimensions_of, tokens_for, vector_for
from tests.integration.conftest import fake_stats, sample, scrape, sdk, wait_until

AZURE_KEY = "azure-secret-key"
GEMINI_KEY = "gemini-secret-key"
CONFIG = """
model_list:
  - {model_name: text-embedding-3-small, provider: openai}
  - {model_name: text-embedding-ada-002, provider: openai}
  - {model_name: azure-embed, provider: azure, model: my-embed-deployment, base_url: AZURE,
     api_version: "2024-10-21"}
  - {model_name: azure-v1-embed, provider: azure, model: text-embedding-3-small, base_url: AZURE,
     api_version: v1}
  - {model_name: gemini-embed, provider: gemini, model: gemini-embedding-001, base_url: GEMINI}
  - {model_name: gemini-badkey, provider: gemini, model: gemini-embedding-001, base_url: GEMINI,
     api_key: wrong-key}
  - {model_name: titan-embed, provider: bedrock, model: "amazon.titan-embed-text-v2:0", base_url: UPSTREAM}
  - {model_name: cohere-embed, provider: bedrock, model: cohere.embed-english-v3, base_url: UPSTREAM}
  # One group over two providers: the first deployment's upstream always fails.
  - {model_name: failover-embed, provider: openai, model: text-embedding-3-small, base_url: BROKEN,
     priority: 0}
  - {model_name: failover-embed, provider: gemini, model: gemini-embedding-001, base_url: GEMINI,
     priority: 1}
"""
UPSTREAM_MODELS = {
    "azure-embed": "my-embed-deployment",
    "azure-v1-embed": "text-embedding-3-small",
    "gemini-embed": "gemini-embedding-001",
    "titan-embed": "amazon.titan-embed-text-v2:0",
    "cohere-embed": "cohere.embed-english-v3",
}
ALL = [
    "text-embedding-3-small",
    "azure-embed",
    "azure-v1-embed",
    "gemini-embed",
    "titan-embed",
    "cohere-embed",
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    logs = Path(tmp_path_factory.mktemp("embeddings-logs"))
    dev = DevStack(
        env_overrides={
            "EDGE_MAX_ATTEMPTS": "1",
            "EDGE_BREAKER_FAILURES": "1000000",
            "AZURE_OPENAI_API_KEY": AZURE_KEY,
            "GEMINI_API_KEY": GEMINI_KEY,
            # What the fake Bedrock checks the SigV4 signature against.
            "AWS_ACCESS_KEY_ID": FAKE_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": FAKE_SECRET_ACCESS_KEY,
            "AWS_REGION": "us-west-2",
        },
        log_dir=logs,
    )
    try:
        dev.start_redis()
        dev.start_upstream()
        # Azure and Gemini upstreams that want their own key: the worker must send it, in the
        # provider's own header.
        azure = dev.spawn_upstream("--require-key", AZURE_KEY)
        gemini = dev.spawn_upstream("--require-key", GEMINI_KEY)
        broken = dev.spawn_upstream("--error-rate", "1", "--error-status", "503")
        config = logs / "config.yaml"
        config.write_text(
            CONFIG.replace("AZURE", azure)
            .replace("GEMINI", f"{gemini}/v1beta")
            .replace("BROKEN", f"{broken}/v1")
            .replace("UPSTREAM", dev.upstream_url)
        )
        dev.env_overrides["EDGE_CONFIG"] = str(config)
        dev.upstreams = {"azure": azure, "gemini": gemini}  # type: ignore[attr-defined]
        for provider in ("openai", "azure", "gemini", "bedrock"):
            dev.start_worker(provider)
        dev.front = dev.start_front()  # type: ignore[attr-defined]
        yield dev
    finally:
        dev.stop()


@pytest.fixture(scope="module")
def front(stack: DevStack) -> Front:
    return stack.front  # type: ignore[attr-defined,no-any-return]


@pytest.fixture(scope="module")
def client(front: Front) -> openai.OpenAI:
    return sdk(front)


def floats32(vector: list[float]) -> list[float]:
    return list(struct.unpack(f"<{len(vector)}f", struct.pack(f"<{len(vector)}f", *vector)))


@pytest.mark.parametrize("model", ALL)
def test_one_string_as_float_and_as_the_sdks_default_base64(client: openai.OpenAI, model: str) -> None:
    text = f"the quick brown fox ({model})"
    dims = dimensions_of(UPSTREAM_MODELS.get(model, model))
    as_float = client.embeddings.create(model=model, input=text, encoding_format="float")
    assert [e.index for e in as_float.data] == [0]
    assert as_float.data[0].embedding == vector_for(text, dims)
    assert as_float.object == "list" and as_float.data[0].object == "embedding"
    # The SDK asks for base64 unless told otherwise, and decodes it: the same floats (the fake's
    # components are exact in float32).
    as_b64 = client.embeddings.create(model=model, input=text)
    assert as_b64.data[0].embedding == as_float.data[0].embedding
    if model not in ("gemini-embed",):
        assert as_float.usage.prompt_tokens == tokens_for(text) == as_float.usage.total_tokens
    else:  # Gemini reports no token count: estimated from the text, 4 characters a token
        assert as_float.usage.prompt_tokens == -(-len(text) // 4)


def test_base64_on_the_wire_is_little_endian_float32(front: Front) -> None:
    # passed through from OpenAI; made by the worker for Gemini and Bedrock
    for model, dims in (("text-embedding-3-small", 8), ("gemini-embed", 8), ("titan-embed", 256)):
        answer = httpx.post(
            f"{front.url}/v1/embeddings",
            json={"model": model, "input": "wire check", "encoding_format": "base64", "dimensions": dims},
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        raw = base64.b64decode(answer.json()["data"][0]["embedding"])
        assert list(struct.unpack(f"<{dims}f", raw)) == floats32(vector_for("wire check", dims))


@pytest.mark.parametrize("model", ["text-embedding-3-small", "azure-embed", "gemini-embed", "titan-embed"])
def test_a_list_keeps_its_order_and_dimensions_apply(client: openai.OpenAI, model: str) -> None:
    # Gemini: two batch calls; Titan: 150 calls (one text each)
    texts = [f"item {i} of a batch for {model}" for i in range(150)]
    dims = 256 if model == "titan-embed" else 64  # Titan v2 takes 256, 512 or 1024
    answer = client.embeddings.create(model=model, input=texts, dimensions=dims)
    assert [e.index for e in answer.data] == list(range(150))
    assert [e.embedding for e in answer.data] == [vector_for(t, dims) for t in texts]


def test_cohere_batches_of_96_with_its_token_counts(client: openai.OpenAI) -> None:
    texts = [f"cohere text {i}" for i in range(200)]  # three calls
    answer = client.embeddings.create(model="cohere-embed", input=texts, encoding_format="float")
    assert [e.embedding for e in answer.data] == [vector_for(t, 1024) for t in texts]
    assert answer.usage.prompt_tokens == sum(tokens_for(t) for t in texts)  # Bedrock's header, summed
    with pytest.raises(openai.BadRequestError) as refused:  # v3 has no output_dimension
        client.embeddings.create(model="cohere-embed", input="x", dimensions=256)
    assert refused.value.body["param"] == "dimensions"  # type: ignore[index]
    assert answer.model  # the upstream's model name


@pytest.mark.parametrize(("refusing", "provider"), [("gemini-embed", "gemini"), ("titan-embed", "bedrock")])
def test_token_arrays_go_to_openai_and_are_refused_elsewhere(
    client: openai.OpenAI, refusing: str, provider: str
) -> None:
    one = client.embeddings.create(model="text-embedding-3-small", input=[101, 202, 303], dimensions=16)
    assert one.data[0].embedding == vector_for([101, 202, 303], 16)
    assert one.usage.prompt_tokens == 3
    many = client.embeddings.create(model="text-embedding-3-small", input=[[1, 2], [3, 4, 5]], dimensions=16)
    assert [e.embedding for e in many.data] == [vector_for([1, 2], 16), vector_for([3, 4, 5], 16)]
    assert many.usage.prompt_tokens == 5
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model=refusing, input=[1, 2, 3])
    assert refused.value.status_code == 400
    assert f"Token arrays cannot be sent to provider {provider}" in refused.value.message
    assert refused.value.body["param"] == "input"  # type: ignore[index]


def test_a_repeat_is_a_cache_hit_that_never_reaches_the_upstream(
    client: openai.OpenAI, stack: DevStack
) -> None:
    for model, upstream in (
        ("text-embedding-3-small", stack.upstream_url),
        ("gemini-embed", stack.upstreams["gemini"]),  # type: ignore[attr-defined]
    ):
        texts = ["cache me", f"cache me too ({model})"]
        first = client.embeddings.with_raw_response.create(model=model, input=texts)
        assert first.headers["x-edge-cache"] == "miss"
        before = fake_stats(upstream)["requests"]
        again = client.embeddings.with_raw_response.create(model=model, input=texts)
        assert again.headers["x-edge-cache"] == "hit-l1"
        assert again.headers["x-edge-attempts"] == "0" and again.headers["x-edge-cost-usd"] == "0"
        assert [e.embedding for e in again.parse().data] == [e.embedding for e in first.parse().data]
        # float and base64 are different answers, each cached; no-cache skips the lookup
        floats = client.embeddings.with_raw_response.create(model=model, input=texts, encoding_format="float")
        assert floats.headers["x-edge-cache"] == "miss"
        fresh = client.embeddings.with_raw_response.create(
            model=model, input=texts, extra_headers={"Cache-Control": "no-cache"}
        )
        assert fresh.headers["x-edge-cache"] == "miss"
        assert fake_stats(upstream)["requests"] == before + 2


def test_an_embeddings_body_never_gets_a_cached_chat_answer(front: Front, client: openai.OpenAI) -> None:
    body = {
        "model": "text-embedding-3-small",
        "input": "shared body",
        "messages": [{"role": "user", "content": "shared body"}],
    }
    headers = {"Authorization": f"Bearer {MASTER_KEY}"}
    chat = httpx.post(f"{front.url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert chat.headers["x-edge-cache"] == "miss"  # whatever the upstream said, now it may be cached
    embedded = httpx.post(f"{front.url}/v1/embeddings", json=body, headers=headers, timeout=30)
    assert embedded.headers["x-edge-cache"] == "miss"
    assert embedded.json()["object"] == "list"


def test_upstream_errors_are_mapped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as limited:
        client.embeddings.create(model="text-embedding-3-small", input="busy [[fake:status=429]]")
    assert limited.value.status_code == 429
    with pytest.raises(openai.InternalServerError) as failed:
        client.embeddings.create(model="gemini-embed", input="broken [[fake:status=500]]")
    assert failed.value.status_code == 502
    assert "upstream gemini error 500" in failed.value.message
    with pytest.raises(openai.BadRequestError) as refused:  # Gemini's own 400, in OpenAI's envelope
        client.embeddings.create(model="gemini-embed", input="x", dimensions=5000)
    assert "outputDimensionality" in refused.value.message
    assert refused.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(openai.RateLimitError):  # Bedrock's ThrottlingException
        client.embeddings.create(model="titan-embed", input="throttled [[fake:status=429]]")
    with pytest.raises(openai.BadRequestError) as invalid:  # Bedrock's ValidationException, its words
        client.embeddings.create(model="titan-embed", input="x", dimensions=300)
    assert "#/dimensions" in invalid.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as unsupported:  # OpenAI's own 400, as it said it
        client.embeddings.create(model="text-embedding-ada-002", input="x", dimensions=8)
    assert unsupported.value.body["message"] == "This model does not support specifying dimensions."  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": ""}, "input"),
        ({"input": []}, "input"),
        ({"input": ["a", 1]}, "input[1]"),
        ({"input": [[1], []]}, "input[1]"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({}, "input"),
    ],
)
def test_bad_requests_get_a_400_naming_the_field(front: Front, body: dict[str, object], param: str) -> None:
    answer = httpx.post(
        f"{front.url}/v1/embeddings",
        json={"model": "text-embedding-3-small", **body},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_virtual_key_is_limited_to_its_models_and_booked(front: Front) -> None:
    made = httpx.post(
        f"{front.url}/key/generate",
        json={
            "key_alias": "embedder",
            "models": ["text-embedding-3-small"],
            "rpm_limit": 100,
            "tpm_limit": 100_000,
        },
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    ).json()
    keyed = openai.OpenAI(base_url=f"{front.url}/v1", api_key=made["key"], max_retries=0)

    def allowed() -> bool:
        try:
            keyed.embeddings.create(model="text-embedding-3-small", input="key probe")
        except openai.AuthenticationError:
            return False  # not loaded by the front yet
        return True

    wait_until(allowed, "the key loaded")
    with pytest.raises(openai.PermissionDeniedError) as denied:
        keyed.embeddings.create(model="gemini-embed", input="not mine")
    assert denied.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    answer = keyed.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="booked text here"
    )
    assert answer.headers["x-ratelimit-limit-requests"] == "100"
    info = httpx.get(
        f"{front.url}/key/info",
        params={"key": made["key_id"]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=10,
    ).json()["info"]
    assert info["requests"] == 2
    assert info["prompt_tokens"] == tokens_for("key probe") + tokens_for("booked text here")
    assert info["completion_tokens"] == 0
    assert info["spend"] > 0  # text-embedding-3-small's price, from genai-prices


def test_a_failing_deployment_falls_over_to_another_provider(client: openai.OpenAI, front: Front) -> None:
    answer = client.embeddings.with_raw_response.create(
        model="failover-embed", input="fail over", dimensions=32
    )
    assert answer.headers["x-edge-provider"] == "gemini"
    assert answer.headers["x-edge-attempts"] == "2"
    assert answer.parse().data[0].embedding == vector_for("fail over", 32)


def test_embeddings_are_metered_as_chat_is(client: openai.OpenAI, front: Front) -> None:
    def prompt_tokens() -> float:
        return sample(
            scrape(f"{front.url}/metrics"),
            "llm_edge_tokens_total",
            provider="openai",
            model="text-embedding-3-small",
            type="prompt",
        )

    before = prompt_tokens()
    answer = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="metered words here"
    )
    assert float(answer.headers["x-edge-cost-usd"]) > 0
    assert prompt_tokens() == before + tokens_for("metered words here")


def test_embeddings_want_post_and_a_key(front: Front) -> None:
    got = httpx.get(
        f"{front.url}/v1/embeddings", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=10
    )
    assert got.status_code == 405 and got.headers["allow"] == "POST"
    anonymous = httpx.post(
        f"{front.url}/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"


def test_identical_concurrent_misses_share_one_upstream_call(front: Front, stack: DevStack) -> None:
    """The chat path's single flight applies to embeddings: its cache key is the flight's."""
    gemini = stack.upstreams["gemini"]  # type: ignore[attr-defined]
    text = f"one flight {uuid.uuid4()} [[fake:delay_ms=800]]"
    keyed = openai.AsyncOpenAI(base_url=f"{front.url}/v1", api_key=MASTER_KEY, max_retries=0)

    async def one() -> tuple[str, list[float]]:
        raw = await keyed.embeddings.with_raw_response.create(model="gemini-embed", input=text, dimensions=16)
        return raw.headers["x-edge-cache"], raw.parse().data[0].embedding

    async def all_of_them() -> list[tuple[str, list[float]]]:
        return await asyncio.gather(*(one() for _ in range(12)))

    before = fake_stats(gemini)["requests"]
    answers = asyncio.run(all_of_them())
    assert fake_stats(gemini)["requests"] - before == 1
    tiers = Counter(tier for tier, _ in answers)
    assert tiers["miss"] == 1 and tiers["miss"] + tiers["joined"] + tiers["hit-l1"] == 12, tiers
    assert all(vector == vector_for(strip_markers(text), 16) for _, vector in answers)


def test_a_refused_gemini_key_is_the_gateways_problem_not_the_clients(client: openai.OpenAI) -> None:
    """Gemini refuses a bad key with a 400; the Gemini adapter's reading (a refused credential)
    applies to embeddings too: a 502 naming the deployment, never the client's 400."""
    with pytest.raises(openai.InternalServerError) as refused:
        client.embeddings.create(model="gemini-badkey", input="x")
    assert refused.value.status_code == 502
    assert refused.value.body["code"] == "upstream_credentials_refused"  # type: ignore[index]
    assert "wrong-key" not in refused.value.message
