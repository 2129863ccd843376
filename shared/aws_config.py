"""What a Bedrock deployment adds to the config: its region, endpoint and (optional) credentials.

Credentials are never resolved here (shared/ stays free of botocore): workers resolve them with
botocore's chain (edge_workers/providers/bedrock_auth.py).
"""

from __future__ import annotations

import msgspec


class AwsCredentials(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Bedrock deployment's own credentials: a profile of the shared AWS files, or variables
    holding the key pair (LiteLLM's `aws_access_key_id: os.environ/NAME`). Never the secrets
    themselves in a log line (see `__repr__`)."""

    profile: str = ""
    access_key_id_env: str = ""
    secret_access_key_env: str = ""
    session_token_env: str = ""
    # Written in the file itself (LiteLLM allows it); win over the variables.
    access_key_id: str = ""
    secret_access_key: str = ""
    session_token: str = ""

    def __repr__(self) -> str:
        return f"AwsCredentials(profile={self.profile!r}, access_key_id_env={self.access_key_id_env!r})"


def bedrock_endpoint(region: str) -> str:
    return f"https://bedrock-runtime.{region}.amazonaws.com"
