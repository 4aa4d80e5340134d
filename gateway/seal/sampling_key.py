"""The per-box secret behind call sampling.

Which calls are analysed must be unpredictable to operators and customers, yet stable for one
call across re-INVITEs and capture restarts. A keyed hash (HMAC-SHA-256) of the call's SIP
identity under a random per-box secret gives both: without the key nobody can tell whether a
call will be sampled; with it the decision is the same every time the call is seen.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


class SamplingKeyError(Exception):
    pass


class SamplingKey:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SamplingKeyError(f"a sampling key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key

    @classmethod
    def load_or_create(cls, path: Path) -> SamplingKey:
        """Read the key at ``path``, creating it (mode 0600, atomically) on first start."""
        try:
            return cls._load(path)
        except FileNotFoundError:
            cls._write(path, secrets.token_bytes(KEY_BYTES), replace=False)
            return cls._load(path)

    @classmethod
    def rotate(cls, path: Path) -> SamplingKey:
        """Replace the key with a fresh one: sampling decisions change from now on."""
        cls._write(path, secrets.token_bytes(KEY_BYTES), replace=True)
        return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> SamplingKey:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise SamplingKeyError(
                f"{path} is readable by others (mode {mode:o}); run: chmod 600 {path}"
            )
        return cls(path.read_bytes())

    @staticmethod
    def _write(path: Path, key: bytes, *, replace: bool) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if another process created the key first
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def fraction(self, identity: bytes) -> float:
        """A uniform number in [0, 1) derived from ``identity``; unpredictable without the key."""
        digest = hmac.new(self._key, identity, hashlib.sha256).digest()
        return int.from_bytes(digest[:8], "big") / 2**64
