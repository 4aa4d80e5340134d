"""The per-box secret behind call sampling.

Which calls are analysed must be unpredictable to operators and customers, yet stable for one
call across re-INVITEs and capture restarts. A keyed hash (HMAC-SHA-256) of the call's SIP
identity under a random per-box secret gives both: without the key nobody can tell whether a
call will be sampled; with it the decision is the same every time the call is seen.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

from gateway.seal.keyprovider import SealError
from gateway.seal.privatefile import read_private, write_private

KEY_BYTES = 32


class SamplingKeyError(SealError):
    pass


class SamplingKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SamplingKeyError(f"a sampling key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> SamplingKey:
        """Read the key at ``path``, creating it (mode 0600, atomically) on first start."""
        if not path.exists():
            write_private(path, secrets.token_bytes(KEY_BYTES))
        return cls(read_private(path))

    @classmethod
    def rotate(cls, path: Path) -> SamplingKey:
        """Replace the key with a fresh one: sampling decisions change from now on."""
        write_private(path, secrets.token_bytes(KEY_BYTES))
        return cls(read_private(path))

    def fraction(self, identity: bytes) -> float:
        """A uniform number in [0, 1) derived from ``identity``; unpredictable without the key."""
        digest = hmac.new(self._key, identity, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
