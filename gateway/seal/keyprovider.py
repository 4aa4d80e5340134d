"""Where the box's keys come from: a TPM, or a passphrase-protected key file.

A provider hands out the vault's key-encryption key (KEK) once at start and signs published
data. Which provider runs is decided by configuration alone: a box whose TPM stops answering
refuses to store anything rather than quietly switching to a key file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

KEK_BYTES = 32
DEFAULT_TCTI = "device:/dev/tpmrm0"

ProviderKind = Literal["tpm", "software", "auto"]


class SealError(Exception):
    """A key or sealed blob cannot be used; the message says why and what to do."""


class KeyProvider(Protocol):
    @property
    def name(self) -> str:
        """``"tpm"`` or ``"software"``: recorded in logs and attestation."""
        ...

    def unwrap_kek(self) -> bytes:
        """The 32-byte KEK; raises SealError when this box may not have it."""
        ...

    def sign(self, data: bytes) -> bytes:
        """A DER-encoded ECDSA P-256/SHA-256 signature of ``data`` by the publishing key."""
        ...

    def public_key_pem(self) -> bytes:
        """The publishing key's public half (SubjectPublicKeyInfo PEM), for verifiers."""
        ...

    def close(self) -> None: ...


def open_provider(
    kind: ProviderKind,
    *,
    state_dir: Path,
    measurement: bytes,
    tcti: str | None = None,
    pcr: int = 23,
    key_file: Path | None = None,
    passphrase: bytes | None = None,
    create: bool = True,
) -> KeyProvider:
    """Open the configured provider or raise SealError saying what was tried and the fix.

    ``"auto"`` means: a key file if one is configured, otherwise the TPM. It never falls back
    from the TPM to software, so an attacker who hides the TPM cannot downgrade the box.
    ``create=False`` refuses to create TPM keys where there are none yet.
    """
    if kind == "auto":
        kind = "software" if key_file is not None else "tpm"
    if kind == "software":
        if key_file is None or passphrase is None:
            raise SealError(
                "the software key provider needs a key file and its passphrase; configure both, "
                "or use the TPM (kind 'tpm')"
            )
        from gateway.seal.softkey import SoftwareKeyProvider

        return SoftwareKeyProvider(key_file, passphrase)
    if kind == "tpm":
        try:
            from gateway.seal.tpm import TpmKeyProvider
        except ImportError as exc:
            raise SealError(
                f"the TPM key provider cannot load its library ({exc}); install tpm2-pytss and "
                "libtss2 (scripts/setup does both)"
            ) from exc
        return TpmKeyProvider(
            tcti or DEFAULT_TCTI, state_dir, measurement=measurement, pcr=pcr, create=create
        )
    raise SealError(f"unknown key provider {kind!r}; use 'tpm', 'software' or 'auto'")
