"""Envelope encryption: ``seal(data) -> blob`` and ``open(blob) -> data``.

Each blob gets its own random 256-bit data key. The data is encrypted with AES-256-GCM under
that key and the data key is wrapped with the KEK (AES-256-GCM too). The KEK is fetched from
the key provider once, when the Sealer is built, so the TPM is never on the per-record path.
A Sealer built with a label (a vault partition) wraps under its own KEK, derived from the
provider's with HKDF-SHA256: a blob sealed under one label does not open under another, and
a process given one label's Sealer holds no key to the others.

Blob layout (version 1), all of it authenticated together with the caller's ``context``::

    magic "CVSB" | version 1 | key id (8) | wrap nonce (12) | wrapped data key (32+16)
    | ciphertext | tag (16)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.seal.keyprovider import KEK_BYTES, KeyProvider, SealError

MAGIC = b"CVSB"
VERSION = 1
_PREFIX = struct.Struct(">4sB8s")  # magic, version, key id
_NONCE_BYTES = 12
_TAG_BYTES = 16
_WRAPPED_BYTES = 32 + _TAG_BYTES
HEADER_BYTES = _PREFIX.size + _NONCE_BYTES + _WRAPPED_BYTES
OVERHEAD = HEADER_BYTES + _TAG_BYTES
# Every data key encrypts exactly one message, so a constant nonce never repeats under a key.
_DATA_NONCE = bytes(_NONCE_BYTES)
_LABEL_INFO = b"callveil labelled kek v1\x00"


def _key_id(kek: bytes) -> bytes:
    # Tells "sealed on another box / under a replaced key" apart from damage, without
    # revealing anything about the KEK.
    return hmac.new(kek, b"callveil kek id", hashlib.sha256).digest()[:8]


def _labelled(kek: bytes, label: str) -> bytes:
    info = _LABEL_INFO + label.encode("utf-8")
    return HKDF(algorithm=hashes.SHA256(), length=KEK_BYTES, salt=None, info=info).derive(kek)


class Sealer:
    """Seals and opens blobs under the KEK of ``provider`` (asked once, here).

    With a non-empty ``label`` the KEK is the one derived for that label (see above); without
    one it is the provider's KEK itself.
    """

    def __init__(self, provider: KeyProvider, *, label: str = "") -> None:
        kek = provider.unwrap_kek()
        if len(kek) != KEK_BYTES:
            raise SealError(f"the {provider.name} key provider returned a {len(kek)}-byte KEK")
        if label:
            kek = _labelled(kek, label)
        self._kek = AESGCM(kek)
        self._prefix = _PREFIX.pack(MAGIC, VERSION, _key_id(kek))

    def seal(self, data: bytes, *, context: bytes = b"") -> bytes:
        """Encrypt ``data``; ``context`` (e.g. a record's partition) must be given to open it."""
        data_key = AESGCM.generate_key(bit_length=256)
        wrap_nonce = os.urandom(_NONCE_BYTES)
        wrapped = self._kek.encrypt(wrap_nonce, data_key, self._prefix + context)
        header = self._prefix + wrap_nonce + wrapped
        return header + AESGCM(data_key).encrypt(_DATA_NONCE, data, header + context)

    def open(self, blob: bytes, *, context: bytes = b"") -> bytes:
        """The data sealed in ``blob``; SealError if it was altered or sealed elsewhere."""
        if len(blob) < OVERHEAD:
            raise SealError(f"not a sealed blob: {len(blob)} bytes is shorter than any blob")
        magic, version, key_id = _PREFIX.unpack_from(blob)
        if magic != MAGIC:
            raise SealError("not a sealed blob (wrong magic): the data is damaged or not ours")
        if version != VERSION:
            raise SealError(
                f"blob format version {version} is not readable by this release (reads "
                f"{VERSION}): the blob is damaged or was written by another callveil release"
            )
        if not hmac.compare_digest(blob[: _PREFIX.size], self._prefix):
            raise SealError(
                f"blob was sealed under another key (key id {key_id.hex()}): it belongs to "
                "another partition, comes from another box or from before this box's keys "
                "were replaced, or it is damaged"
            )
        header = memoryview(blob)[:HEADER_BYTES]
        nonce = header[_PREFIX.size : _PREFIX.size + _NONCE_BYTES]
        try:
            data_key = self._kek.decrypt(nonce, header[-_WRAPPED_BYTES:], self._prefix + context)
            return AESGCM(data_key).decrypt(
                _DATA_NONCE, memoryview(blob)[HEADER_BYTES:], bytes(header) + context
            )
        except InvalidTag:
            raise SealError(
                "blob failed authentication: it was damaged or tampered with, or it is opened "
                "with another context than it was sealed with; nothing was decrypted"
            ) from None
