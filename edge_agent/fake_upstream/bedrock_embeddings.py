"""The fake Bedrock runtime's InvokeModel for embeddings models (`/model/{model id}/invoke`):
Amazon Titan Text Embeddings and Cohere Embed bodies, the same deterministic vectors as the
other fake embeddings APIs (`embeddings.vector_for`), Bedrock's errors (`{"message"}` and
`x-amzn-ErrorType`), and a SigV4 check: the signature is recomputed with botocore from the
path as sent and the fake's test credentials, so a wrongly signed request gets 403 as from AWS.

MINIMAL STAND-IN for the signature check until the bedrock provider's fake (`aws.py`) is on
main; the credentials are the same as its."""

from __future__ import annotations

import contextvars
import hmac
import re
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from edge_agent.fake_upstream.common import BaseApi, json_response
from edge_agent.fake_upstream.content import Markers, random_id, strip_markers
from edge_agent.fake_upstream.embeddings import dimensions_of, tokens_for, vector_for

FAKE_ACCESS_KEY_ID = "AKIDEDGEFAKEUPSTREAM"
FAKE_SECRET_ACCESS_KEY = "edge-fake-upstream-secret-access-key"
COHERE_BATCH = 96
TITAN_V2_DIMENSIONS = (256, 512, 1024)

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/\d{8}/(?P<region>[a-z0-9-]+)/bedrock/aws4_request,\s*"
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
_EXCEPTIONS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_model: contextvars.ContextVar[str] = contextvars.ContextVar("fake_bedrock_model", default="")


def signature_problem(request: web.Request, body: bytes) -> str | None:
    """Why the request's SigV4 signature is not the fake credentials' (None: it is)."""
    match = _AUTH.match(request.headers.get("Authorization", ""))
    if match is None:
        return "Missing Authentication Token"
    if match["key"] != FAKE_ACCESS_KEY_ID:
        return "The security token included in the request is invalid."
    names = match["headers"].split(";")
    if "host" not in names or any(name not in request.headers for name in names):
        return "SignedHeaders must include host and only headers the request carries"
    signed = AWSRequest(
        method="POST",
        url=f"http://{request.host}{request.raw_path}",
        data=body,
        headers={name: request.headers[name] for name in names},
    )
    signed.context["timestamp"] = request.headers.get("X-Amz-Date", "")
    token = request.headers.get("X-Amz-Security-Token")
    signer = SigV4Auth(
        Credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, token), "bedrock", match["region"]
    )
    expected = signer.signature(signer.string_to_sign(signed, signer.canonical_request(signed)), signed)
    if not hmac.compare_digest(expected, match["signature"]):
        return "The request signature we calculated does not match the signature you provided."
    return None


def _is_cohere(model: str) -> bool:
    return "cohere.embed" in model


class BedrockEmbeddingsApi(BaseApi):
    def check_headers(self, request: web.Request) -> web.Response | None:
        return None  # the signature is checked over the body, in `invoke`

    def validate(self, body: dict[str, Any]) -> web.Response | None:
        model = _model.get()
        body["model"] = model
        if _is_cohere(model):
            texts = body.get("texts")
            if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
                return self.error(
                    400, "Malformed input request: #/texts: expected a non-empty list of strings"
                )
            if len(texts) > COHERE_BATCH:
                return self.error(
                    400, f"Malformed input request: #/texts: expected maxLength: {COHERE_BATCH}"
                )
            if body.get("input_type") not in (
                "search_document",
                "search_query",
                "classification",
                "clustering",
            ):
                return self.error(400, "Malformed input request: #/input_type: is missing or not valid")
            return None
        if "titan-embed-text" not in model:
            return self.error(404, f"The model {model} does not support InvokeModel embeddings in this fake.")
        text = body.get("inputText")
        if not isinstance(text, str) or not text:
            return self.error(400, "Malformed input request: #/inputText: expected a non-empty string")
        dimensions = body.get("dimensions")
        if dimensions is not None and ("text-v1" in model or dimensions not in TITAN_V2_DIMENSIONS):
            return self.error(400, "Malformed input request: #/dimensions: 256, 512 or 1024 only")
        return None

    def error(
        self,
        status: int,
        message: str | None = None,
        headers: dict[str, str] | None = None,
        *,
        code: str | None = None,
    ) -> web.Response:
        kind = _EXCEPTIONS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
        return json_response(
            {"message": message or kind},
            status,
            {**(headers or {}), "x-amzn-ErrorType": f"{kind}:http://internal"},
        )

    def marker_text(self, body: dict[str, Any]) -> str:
        texts = body.get("texts")
        if isinstance(texts, list):
            return " ".join(t for t in texts if isinstance(t, str))
        text = body.get("inputText")
        return text if isinstance(text, str) else ""

    async def respond(
        self, request: web.Request, body: dict[str, Any], text: str, markers: Markers
    ) -> web.StreamResponse:
        model = body["model"]
        if _is_cohere(model):
            texts = body["texts"]
            dims = body.get("output_dimension") or dimensions_of(model)
            vectors = [vector_for(strip_markers(t), dims) for t in texts]
            by_type = isinstance(body.get("embedding_types"), list)
            answer = {
                "id": random_id(24),
                "embeddings": {"float": vectors} if by_type else vectors,
                "response_type": "embeddings_by_type" if by_type else "embeddings_floats",
                "texts": texts,
            }
            count = str(sum(tokens_for(t) for t in texts))
            return json_response(answer, headers={"X-Amzn-Bedrock-Input-Token-Count": count})
        dims = body.get("dimensions") or dimensions_of(model)
        source = body["inputText"]
        return json_response(
            {"embedding": vector_for(strip_markers(source), dims), "inputTextTokenCount": tokens_for(source)}
        )

    async def invoke(self, request: web.Request) -> web.StreamResponse:
        problem = signature_problem(request, await request.read())  # aiohttp keeps the body for later
        if problem is not None:
            self.stats.requests += 1
            return self.error(403, problem)
        token = _model.set(request.match_info["model"])
        try:
            return await self.handle(request)
        finally:
            _model.reset(token)


def add_routes(app: web.Application, api: BedrockEmbeddingsApi) -> None:
    app.router.add_post("/model/{model}/invoke", api.invoke)
