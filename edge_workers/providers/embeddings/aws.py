"""SigV4 for Bedrock embeddings calls, with botocore's signer, and the region a deployment signs
for. MINIMAL STAND-IN: credentials come from the environment only (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN); the bedrock provider's `bedrock_auth.sign` (the
whole credential chain, refreshable credentials, per-deployment credentials) replaces this
module once it is on main: same signature, `sign(deployment, url, body, headers)`."""

from __future__ import annotations

import os
import re

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from shared.config import Deployment
from shared.errors import EdgeError

SIGNING_NAME = "bedrock"
_HOST_REGION = re.compile(r"^https://bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


def region_of(deployment: Deployment) -> str:
    """The region in the endpoint's host name, else AWS_REGION / AWS_DEFAULT_REGION."""
    match = _HOST_REGION.match(deployment.base_url)
    if match:
        return match[1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def sign(deployment: Deployment, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus the signature's (Authorization, X-Amz-Date, X-Amz-Security-Token) for a
    POST of `body` to `url` (already percent-encoded, sent as is)."""
    key_id = os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key_id or not secret:
        raise EdgeError(502, "the gateway's worker has no AWS credentials for this Bedrock deployment")
    credentials = Credentials(key_id, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(credentials, SIGNING_NAME, region_of(deployment)).add_auth(request)
    return dict(request.headers.items())
