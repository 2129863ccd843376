"""AWS Signature V4 for Bedrock requests: AWS's own signer in awscrt (never a SigV4 of our own).

Credentials are resolved once per worker process and per credential source (the default chain:
environment, shared files, SSO, container and instance roles...; or a deployment's own profile
or key pair), through botocore's session. Refreshable credentials (roles, SSO) are frozen per
request with `get_frozen_credentials()`, which refreshes them when they near expiry, so a
long-running worker never signs with expired ones; `keep_fresh` does that refresh ahead of
time, in a thread, so the event loop does not wait on it. One awscrt credentials provider is
kept per frozen credentials and replaced when they change. Reusable by any Bedrock call (chat,
embeddings): `sign(deployment, url, body)` gives the headers to send.

Why awscrt's signer and not botocore's `SigV4Auth`: the signature lies on every Bedrock miss's
path, and botocore's builds the canonical request through `email.message` headers in Python:
~40 µs of CPU in a loop, ~135 µs for mapping + signing timed inside a worker at c=1 (the other
processes on the cores leave its caches cold). The CRT's C signer takes ~14 µs in the same loop
and gives the same Authorization header byte for byte (tests/unit/test_bedrock_adapter.py checks
it against botocore's). With static credentials it signs synchronously, in the calling thread.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import botocore.session
from awscrt.auth import (
    AwsCredentialsProvider,
    AwsSignatureType,
    AwsSignedBodyHeaderType,
    AwsSigningAlgorithm,
    AwsSigningConfig,
    aws_sign_request,
)
from awscrt.http import HttpHeaders, HttpRequest
from botocore.auth import _host_from_url
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials
from botocore.exceptions import BotoCoreError

from shared.aws_config import AwsCredentials
from shared.config import Deployment
from shared.errors import EdgeError

log = logging.getLogger("edge.worker")

# The service name Bedrock's runtime endpoints verify signatures for (its `signingName`).
SIGNING_NAME = "bedrock"

_sources: dict[AwsCredentials | None, Credentials | None] = {}


# awscrt's static credentials provider per frozen credentials: a refreshed source gets a new one.
_providers: dict[ReadOnlyCredentials, AwsCredentialsProvider] = {}


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


def provider(source: AwsCredentials | None) -> AwsCredentialsProvider:
    """The credentials `source` signs with now, as an awscrt provider (a new one once they were
    refreshed). Raises EdgeError 502 when the source has none."""
    found = credentials(source)
    if found is None:
        raise EdgeError(502, "the gateway's worker found no AWS credentials for this Bedrock deployment")
    frozen = found.get_frozen_credentials()  # refreshed here when they are about to expire
    kept = _providers.get(frozen)
    if kept is None:
        if len(_providers) > 64:  # old credentials of refreshed sources: drop them all
            _providers.clear()
        kept = _providers[frozen] = AwsCredentialsProvider.new_static(
            frozen.access_key, frozen.secret_key, frozen.token
        )
    return kept


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

    Host and X-Amz-Content-SHA256 are sent and signed: AWS takes the content hash header from
    any SigV4 client (S3 requires it; the fake checks it)."""
    host, target = _split(url)
    content_hash = hashlib.sha256(body).hexdigest()
    request = HttpRequest("POST", target, HttpHeaders([("Host", host), *headers.items()]))
    config = AwsSigningConfig(
        algorithm=AwsSigningAlgorithm.V4,
        signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
        credentials_provider=provider(deployment.aws),
        region=region_of(deployment),
        service=SIGNING_NAME,
        date=utc_now(),
        signed_body_value=content_hash,
        signed_body_header_type=AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256,
    )
    # Static credentials: signed before the call returns, so result() does not wait.
    aws_sign_request(request, config).result()
    signed = request.headers
    out = {**headers, "Host": host, "X-Amz-Content-SHA256": content_hash}
    out["X-Amz-Date"] = signed.get("X-Amz-Date")
    out["Authorization"] = signed.get("Authorization")
    token = signed.get("X-Amz-Security-Token")
    if token is not None:
        out["X-Amz-Security-Token"] = token
    return out


def utc_now() -> datetime.datetime:
    """The signature's time (a function of its own, so tests can set it)."""
    return datetime.datetime.now(datetime.UTC)


@functools.lru_cache(maxsize=1024)
def _split(url: str) -> tuple[str, str]:
    """`url`'s Host header as botocore signs it, and its path with its query, as sent."""
    parts = urlsplit(url)
    target = parts.path + ("?" + parts.query if parts.query else "")
    return host_of(url), target or "/"
