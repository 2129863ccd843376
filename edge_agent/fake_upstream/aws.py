"""AWS wire pieces the fake Bedrock needs: the event-stream frame encoder, and the SigV4 check.

The encoder is written here (test infrastructure; the gateway itself only ever *parses* event
streams, with botocore) and its frames are checked by parsing them with botocore's own decoder
in tests/unit/test_bedrock_fake.py. The signature is verified by recomputing it with botocore's
`SigV4Auth` from the headers the request says it signed, with the fake's known test credentials.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import re
import struct
import zlib
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

# The only credentials the fake accepts (`edge-agent up` and the tests give them to workers).
FAKE_ACCESS_KEY_ID = "AKIDEDGEFAKEUPSTREAM"
FAKE_SECRET_ACCESS_KEY = "edge-fake-upstream-secret-access-key"
SIGNING_NAME = "bedrock"
MAX_SKEW = datetime.timedelta(minutes=15)  # what AWS allows between the signer's clock and its own

_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/,\s]+)/(?P<date>\d{8})/(?P<region>[a-z0-9-]+)/"
    r"(?P<service>[a-z0-9-]+)/aws4_request,\s*SignedHeaders=(?P<headers>[a-z0-9;-]+),\s*"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
_STRING = 7  # the event-stream header value type for a UTF-8 string


def _header(name: str, value: str) -> bytes:
    name_bytes, value_bytes = name.encode(), value.encode()
    return (
        struct.pack("!B", len(name_bytes))
        + name_bytes
        + struct.pack("!BH", _STRING, len(value_bytes))
        + value_bytes
    )


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (lengths + CRC32), headers, payload, message CRC32."""
    header_bytes = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(header_bytes) + len(payload) + 4
    prelude = struct.pack("!II", total, len(header_bytes))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + header_bytes + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event(event_type: str, payload: bytes) -> bytes:
    headers = {":event-type": event_type, ":content-type": "application/json", ":message-type": "event"}
    return frame(headers, payload)


def exception(exception_type: str, payload: bytes) -> bytes:
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return frame(headers, payload)


def signature_problem(method: str, url: str, headers: Any, body: bytes, now: datetime.datetime) -> str | None:
    """Why the request's SigV4 signature is not valid for the fake's credentials (None: valid).
    `url` is scheme, host and the raw path as sent; `headers` a case-insensitive mapping."""
    auth = headers.get("Authorization", "")
    if not auth:
        return "Missing Authentication Token"
    match = _AUTH_RE.match(auth)
    if match is None:
        return (
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' (AWS4-HMAC-SHA256)"
        )
    if match["key"] != FAKE_ACCESS_KEY_ID:
        return "The security token included in the request is invalid."
    if match["service"] != SIGNING_NAME:
        return f"Credential should be scoped to correct service: '{SIGNING_NAME}'."
    amz_date = headers.get("X-Amz-Date", "")
    try:
        signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "X-Amz-Date is missing or not in the basic ISO 8601 format"
    if abs(now - signed_at) > MAX_SKEW or amz_date[:8] != match["date"]:
        return "Signature expired or not yet valid (X-Amz-Date)"
    names = match["headers"].split(";")
    if "host" not in names or any(name not in headers for name in names):
        return "SignedHeaders must include host and name only headers the request carries"
    declared = headers.get("X-Amz-Content-SHA256")
    if declared is not None and declared != hashlib.sha256(body).hexdigest():
        return "The provided 'x-amz-content-sha256' header does not match what was computed."
    request = AWSRequest(method=method, url=url, data=body, headers={n: headers[n] for n in names})
    request.context["timestamp"] = amz_date
    token = headers.get("X-Amz-Security-Token")
    signer = SigV4Auth(
        Credentials(FAKE_ACCESS_KEY_ID, FAKE_SECRET_ACCESS_KEY, token), SIGNING_NAME, match["region"]
    )
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    if not hmac.compare_digest(expected, match["signature"]):
        return "The request signature we calculated does not match the signature you provided."
    return None
