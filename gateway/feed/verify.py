"""Checking what arrives: the topic, the payload's shape and its signature by a registered box.

Each box is registered by dropping its publishing key's public half into the key directory as
``<box>.pem`` (what ``KeyProvider.public_key_pem()`` gives). A payload is accepted only if its
topic, ``box`` and ``site`` agree, its bytes are the canonical form of its content, and its
ECDSA P-256/SHA-256 signature verifies under that box's key.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.aggregates.labels import check_label
from gateway.config import ConfigError
from gateway.publish import topics
from gateway.publish.message import (
    AGGREGATES_SCHEMA,
    SIGNATURE,
    STATUS_SCHEMA,
    canonical,
    signed_bytes,
)

MAX_PAYLOAD_BYTES = 1 << 20
_SCHEMAS = {topics.AGGREGATES: AGGREGATES_SCHEMA, topics.STATUS: STATUS_SCHEMA}
_FIELDS = {"schema", "box", "site", "seq", "body", SIGNATURE}


class Refused(Exception):
    """A payload that is not accepted; the message says why (it is logged, never fatal)."""


@dataclass(frozen=True, slots=True)
class Received:
    kind: str  # topics.AGGREGATES or topics.STATUS
    site: str
    box: str
    seq: int
    body: dict[str, Any]


class KeyRing:
    """The registered boxes' public keys, from ``directory/<box>.pem``."""

    def __init__(self, directory: Path) -> None:
        if not directory.is_dir():
            raise ConfigError(
                f"--keys {str(directory)!r} is not a directory; create it and put each box's "
                "public key in it as <box>.pem"
            )
        self._directory = directory
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self.reload()

    def reload(self) -> None:
        """Read the directory again (a box registered while the feed runs)."""
        keys = {}
        for path in sorted(self._directory.glob("*.pem")):
            try:
                box = check_label(path.stem, "box id")
                key = serialization.load_pem_public_key(path.read_bytes())
            except (ValueError, OSError) as exc:
                raise ConfigError(f"{path}: not a usable box key ({exc})") from None
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
                raise ConfigError(f"{path}: a box key must be an ECDSA P-256 public key")
            keys[box] = key
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    def boxes(self) -> tuple[str, ...]:
        """The registered box ids, as last read."""
        return tuple(self._keys)

    def key(self, box: str) -> ec.EllipticCurvePublicKey | None:
        if box not in self._keys:
            self.reload()
        return self._keys.get(box)


def verify(keys: KeyRing, topic: str, payload: bytes) -> Received:
    """The content of a payload that passed every check; Refused naming the first that failed."""
    try:
        site, box, kind = topics.parse(topic)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise Refused(f"payload of {len(payload)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError):
        raise Refused("payload is not JSON") from None
    if not isinstance(message, dict) or set(message) != _FIELDS:
        raise Refused(f"payload must be an object with exactly {sorted(_FIELDS)}")
    if message["schema"] != _SCHEMAS[kind]:
        raise Refused(f"schema {message['schema']!r} does not belong on a {kind} topic")
    if message["box"] != box or message["site"] != site:
        raise Refused("the payload's box or site differs from its topic")
    seq = message["seq"]
    if type(seq) is not int or seq < 1:
        raise Refused("seq must be a positive integer")
    if not isinstance(message["body"], dict):
        raise Refused("body must be an object")
    try:
        if canonical(message) != payload:
            raise Refused("payload is not in canonical form")
    except ValueError:
        raise Refused("payload holds values canonical JSON cannot carry") from None
    key = keys.key(box)
    if key is None:
        raise Refused(f"box {box!r} is not registered (no {box}.pem in the key directory)")
    try:
        signature = base64.b64decode(message[SIGNATURE], validate=True)
        key.verify(signature, signed_bytes(message), ec.ECDSA(hashes.SHA256()))
    except (TypeError, binascii.Error, InvalidSignature):
        raise Refused(f"signature does not verify under box {box!r}'s registered key") from None
    return Received(kind, site, box, seq, message["body"])
