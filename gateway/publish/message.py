"""Signed payloads: canonical JSON carrying a schema id, the box, a sequence number and a body.

The signature (DER ECDSA P-256/SHA-256, base64) covers the canonical bytes of the message
without its ``signature`` member: keys sorted, no whitespace, ASCII only, no NaN. Published
values are labels, integers and a few small decimals, for which this form coincides with
RFC 8785 (JCS), so a verifier in another language can rebuild the signed bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.hazmat.primitives import serialization

AGGREGATES_SCHEMA = "callveil/aggregates/v1"
STATUS_SCHEMA = "callveil/status/v1"
SIGNATURE = "signature"


def canonical(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def signed_payload(
    schema: str,
    *,
    box: str,
    site: str,
    seq: int,
    body: Mapping[str, Any],
    sign: Callable[[bytes], bytes],
) -> bytes:
    """The payload bytes of ``body``, signed with ``sign`` (the box key's ``sign``)."""
    message = {"schema": schema, "box": box, "site": site, "seq": seq, "body": body}
    signature = base64.b64encode(sign(canonical(message))).decode("ascii")
    return canonical({**message, SIGNATURE: signature})


def signed_bytes(message: Mapping[str, Any]) -> bytes:
    """The bytes the signature of a decoded ``message`` covers."""
    return canonical({k: v for k, v in message.items() if k != SIGNATURE})


def key_fingerprint(public_key_pem: bytes) -> str:
    """SHA-256 (hex) of a public key's DER SubjectPublicKeyInfo, as ``openssl pkey`` gives it."""
    key = serialization.load_pem_public_key(public_key_pem)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()
