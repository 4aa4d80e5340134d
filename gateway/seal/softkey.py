"""Keys for boxes without a TPM: a key file encrypted under a passphrase.

Weaker than the TPM (whoever has the file and the passphrase has the keys, and nothing ties
them to the installed release), so it runs only when configured explicitly. The file is JSON:
scrypt parameters and salt, a passphrase check, and the KEK plus the publishing key encrypted
with AES-256-GCM; every field but the ciphertext is bound to it as associated data.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.seal.keyprovider import KEK_BYTES, SealError
from gateway.seal.privatefile import read_private, write_private

FORMAT = "callveil-softkey"
VERSION = 1
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# Bounds on the stored parameters, so an edited file cannot make start-up take gigabytes.
_N_RANGE = (2**14, 2**18)
_R_RANGE = (1, 8)
_P_RANGE = (1, 4)
_SALT_BYTES = 16
_NONCE_BYTES = 12


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"{field} is not base64") from exc


def _int_in(value: object, field: str, bounds: tuple[int, int]) -> int:
    if type(value) is not int or not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{field} is outside {bounds[0]}..{bounds[1]}")
    return value


def _derive(passphrase: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    """(encryption key, passphrase check): two halves of one scrypt output."""
    out = Scrypt(salt=salt, length=64, n=n, r=r, p=p).derive(passphrase)
    return out[:32], hashlib.sha256(out[32:]).digest()


def _associated(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


class SoftwareKeyProvider:
    """The KEK and an ECDSA P-256 publishing key from a passphrase-protected file."""

    name = "software"

    def __init__(self, path: Path, passphrase: bytes, *, scrypt_n: int = SCRYPT_N) -> None:
        """Open the key file at ``path``, creating it with fresh keys on first start.

        ``scrypt_n`` applies to a new file only; an existing file carries its own parameters.
        """
        if not passphrase:
            raise SealError("the software key provider needs a non-empty passphrase")
        self._path = path
        if not path.exists():
            self._create(passphrase, scrypt_n)
        self._kek, self._signer = self._load(passphrase)

    def _create(self, passphrase: bytes, scrypt_n: int) -> None:
        _int_in(scrypt_n, "scrypt_n", _N_RANGE)
        salt = os.urandom(_SALT_BYTES)
        nonce = os.urandom(_NONCE_BYTES)
        key, check = _derive(passphrase, salt, scrypt_n, SCRYPT_R, SCRYPT_P)
        signer = ec.generate_private_key(ec.SECP256R1())
        inner = os.urandom(KEK_BYTES) + signer.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        header: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "kdf": {"name": "scrypt", "n": scrypt_n, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
            "check": _b64(check),
            "nonce": _b64(nonce),
        }
        ciphertext = AESGCM(key).encrypt(nonce, inner, _associated(header))
        document = {**header, "ciphertext": _b64(ciphertext)}
        write_private(self._path, json.dumps(document, indent=1).encode() + b"\n")

    def _load(self, passphrase: bytes) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
        damaged = f"key file {self._path} is damaged or was modified"
        try:
            document = json.loads(read_private(self._path))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            header = {k: v for k, v in document.items() if k != "ciphertext"}
            if header.get("format") != FORMAT or header.get("version") != VERSION:
                raise ValueError(f"not a {FORMAT} version {VERSION} file")
            kdf = header.get("kdf")
            if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
                raise ValueError("unknown key derivation")
            n = _int_in(kdf["n"], "n", _N_RANGE)
            if n & (n - 1):
                raise ValueError("scrypt n is not a power of two")
            r = _int_in(kdf["r"], "r", _R_RANGE)
            p = _int_in(kdf["p"], "p", _P_RANGE)
            salt = _unb64(header.get("salt"), "salt")
            check = _unb64(header.get("check"), "check")
            nonce = _unb64(header.get("nonce"), "nonce")
            ciphertext = _unb64(document.get("ciphertext"), "ciphertext")
            if len(salt) != _SALT_BYTES or len(nonce) != _NONCE_BYTES:
                raise ValueError("unexpected field sizes")
        except (ValueError, KeyError) as exc:
            raise SealError(f"{damaged} ({exc}); restore it from backup") from None
        key, expected = _derive(passphrase, salt, n, r, p)
        if not hmac.compare_digest(check, expected):
            raise SealError(
                f"wrong passphrase for key file {self._path} (or the file's key-derivation "
                "fields were altered); supply the passphrase the file was created with"
            )
        try:
            inner = AESGCM(key).decrypt(nonce, ciphertext, _associated(header))
            signer = serialization.load_der_private_key(inner[KEK_BYTES:], password=None)
        except (InvalidTag, ValueError):
            raise SealError(f"{damaged}; restore it from backup") from None
        if not isinstance(signer, ec.EllipticCurvePrivateKey) or signer.curve.name != "secp256r1":
            raise SealError(f"{damaged} (the signing key is not ECDSA P-256)")
        return inner[:KEK_BYTES], signer

    def unwrap_kek(self) -> bytes:
        return self._kek

    def sign(self, data: bytes) -> bytes:
        return self._signer.sign(data, ec.ECDSA(hashes.SHA256()))

    def public_key_pem(self) -> bytes:
        return self._signer.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def close(self) -> None:
        """Nothing to release: present so callers treat every provider alike."""
