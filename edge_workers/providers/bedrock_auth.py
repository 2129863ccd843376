"""AWS Signature V4 for Bedrock requests, with botocore's signer (never a SigV4 of our own).

Credentials are resolved once per worker process and per credential source (the default chain:
environment, shared files, SSO, container and instance roles...; or a deployment's own profile
or key pair), through botocore's session. Refreshable credentials (roles, SSO) are frozen per
request with `get_frozen_credentials()`, which refreshes them when they near expiry, so a
long-running worker never signs with expired ones; `keep_fresh` does that refresh ahead of
time, in a thread, so the event loop does not wait on it. One `SigV4Auth` is kept per (credentials,
region) and replaced when the credentials change. Reusable by any Bedrock call (chat,
embeddings): `sign(deployment, url, body)` gives the headers to send.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import botocore.session
from botocore.auth import SigV4Auth, _host_from_url
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from shared.aws_config import AwsCredentials
from shared.config import Deployment
from shared.errors import EdgeError

log = logging.getLogger("edge.worker")

# The service name Bedrock's runtime endpoints verify signatures for (its `signingName`).
SIGNING_NAME = "bedrock"

_sources: dict[AwsCredentials | None, Credentials | None] = {}


class LeanSigV4Auth(SigV4Auth):
    """botocore's SigV4 without the work it repeats on every request (~7 µs of ~40):

    - the signing key depends only on the secret, the date, the region and the service, yet
      botocore derives it again for every request (four HMACs of its five): kept for the day;
    - the headers to sign are gathered twice per request, through email.message headers (the
      canonical headers, then the signed-header list): gathered once.

    Everything else (the canonical request, the string to sign, the signature) is botocore's."""

    def __init__(self, credentials: ReadOnlyCredentials, service_name: str, region_name: str) -> None:
        super().__init__(credentials, service_name, region_name)
        self._day = ""
        self._day_key = b""

    def signature(self, string_to_sign: str, request: AWSRequest) -> str:
        day = request.context["timestamp"][0:8]
        if day != self._day:
            key = self._sign(f"AWS4{self.credentials.secret_key}".encode(), day)
            for part in (self._region_name, self._service_name, "aws4_request"):
                key = self._sign(key, part)
            self._day, self._day_key = day, key
        return str(self._sign(self._day_key, string_to_sign, hex=True))

    def headers_to_sign(self, request: AWSRequest) -> Any:
        # Both calls come after the request's last change (add_auth's own headers).
        gathered = request.context.get(_GATHERED)
        if gathered is None:
            gathered = request.context[_GATHERED] = super().headers_to_sign(request)
        return gathered


_GATHERED = "edge_headers_to_sign"  # where a request's gathered headers wait for the second call


_signers: dict[tuple[ReadOnlyCredentials, str], LeanSigV4Auth] = {}


def _resolve(source: AwsCredentials | None, env: Mapping[str, str]) -> Credentials | None:
    """botocore's answer for one credential source (None: nothing found). May do I/O (files,
    the instance metadata service): call it at start, or from a thread."""
    if source is not None and (source.access_key_id or source.access_key_id_env):
        # A key pair of its own: those or nothing (never the default chain's, silently).
        key_id = source.access_key_id or env.get(source.access_key_id_env, "")
        secret = source.secret_access_key or env.get(source.secret_access_key_env, "")
        token = source.session_token or env.get(source.session_token_env, "") or None
        return Credentials(key_id, secret, token) if key_id and secret else None
    session = botocore.session.Session(profile=(source.profile or None) if source else None)
    try:
        return session.get_credentials()
    except BotoCoreError as e:  # a profile that does not exist, a broken config file...
        log.warning("AWS credentials could not be resolved: %s", type(e).__name__)
        return None


def credentials(source: AwsCredentials | None) -> Credentials | None:
    """The credentials of a source, resolved on first use and kept for the process."""
    if source not in _sources:
        _sources[source] = _resolve(source, os.environ)
    return _sources[source]


def missing_credentials(deployments: list[Deployment]) -> set[str]:
    """The labels (`api_key_env`) of the Bedrock deployments no credentials were found for;
    resolves every source now, so the first request pays nothing."""
    missing = set()
    for d in deployments:
        if d.provider == "bedrock" and credentials(d.aws) is None:
            log.warning("deployment %s: no AWS credentials found", d.id)
            missing.add(d.api_key_env)
    return missing


REFRESH_EVERY_S = 60.0  # well inside botocore's 15-minute advisory refresh window


async def keep_fresh() -> None:
    """Refresh temporary credentials (roles, SSO) in a thread before they near expiry, so that
    `get_frozen_credentials()` on the event loop never has to fetch new ones itself (a blocking
    call to STS or the instance metadata service)."""
    while True:
        await asyncio.sleep(REFRESH_EVERY_S)
        for found in list(_sources.values()):
            if isinstance(found, RefreshableCredentials):
                try:
                    await asyncio.to_thread(found.get_frozen_credentials)
                except BotoCoreError as e:  # kept: the next round, or a request, tries again
                    log.warning("AWS credentials refresh failed: %s", type(e).__name__)


def signer(source: AwsCredentials | None, region: str) -> LeanSigV4Auth:
    found = credentials(source)
    if found is None:
        raise EdgeError(502, "the gateway's worker found no AWS credentials for this Bedrock deployment")
    frozen = found.get_frozen_credentials()  # refreshed here when they are about to expire
    key = (frozen, region)
    auth = _signers.get(key)
    if auth is None:
        if len(_signers) > 64:  # old credentials of refreshed sources: drop them all
            _signers.clear()
        auth = _signers[key] = LeanSigV4Auth(frozen, SIGNING_NAME, region)
    return auth


_HOST_REGION = re.compile(r"^https://bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


def region_of(deployment: Deployment) -> str:
    """The region a deployment signs for: its own (config files always give one), else the one
    in its endpoint's host name, else AWS_REGION / AWS_DEFAULT_REGION."""
    if deployment.region:
        return deployment.region
    match = _HOST_REGION.match(deployment.base_url)
    if match:
        return match[1]
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


_hosts: dict[str, str] = {}


def host_of(url: str) -> str:
    """The Host header botocore signs for `url` (its own `_host_from_url`: the port only when
    not the scheme's default, IPv6 in brackets), kept per scheme and authority."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    host = _hosts.get(origin)
    if host is None:
        if len(_hosts) > 256:
            _hosts.clear()
        host = _hosts[origin] = _host_from_url(origin)
    return host


def sign(deployment: Deployment, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """`headers` plus the signature's (Authorization, X-Amz-Date, X-Amz-Security-Token) for a
    POST of `body` to `url` (already percent-encoded, sent as is).

    `Host` and `X-Amz-Content-SHA256` are given to botocore rather than left for it to find:
    it would parse the URL for the host twice per signature and prepare the whole request
    again to hash its body, a third of its signing time. Both are sent, and signed: AWS takes
    the content hash header from any SigV4 client (S3 requires it; the fake checks it)."""
    out = {**headers, "Host": host_of(url), "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    request = AWSRequest(method="POST", url=url, data=body, headers=out)
    signer(deployment.aws, region_of(deployment)).add_auth(request)
    # What the signature added, read by name: botocore's headers are an email.message.Message,
    # whose items() re-checks every header on every read.
    signed = request.headers
    out["X-Amz-Date"] = signed["X-Amz-Date"]
    out["Authorization"] = signed["Authorization"]
    token = signed.get("X-Amz-Security-Token")
    if token is not None:
        out["X-Amz-Security-Token"] = token
    return out
