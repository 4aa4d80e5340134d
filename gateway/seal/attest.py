"""The box's side of attestation: the documents that ``gateway.verifiers.attestation`` checks."""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from gateway.seal.keyprovider import KeyProvider, SealError
from gateway.verifiers.attestation import (
    BOOT_PCRS,
    CHALLENGE_FORMAT,
    ENROLMENT_FORMAT,
    QUOTE_FORMAT,
)

if TYPE_CHECKING:
    from gateway.seal.tpm import TpmKeyProvider


def _tpm(provider: KeyProvider) -> TpmKeyProvider:
    from gateway.seal.tpm import TpmKeyProvider

    if not isinstance(provider, TpmKeyProvider):
        raise SealError(
            f"attestation needs the TPM key provider; this box uses the {provider.name} "
            "provider, whose keys no hardware vouches for"
        )
    return provider


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def enrolment(provider: KeyProvider) -> dict[str, Any]:
    """The EK, its certificate (if the TPM has one) and the AK, for the verifier's challenge."""
    tpm = _tpm(provider)
    ek_public, certificate = tpm.endorsement()
    return {
        "format": ENROLMENT_FORMAT,
        "ek_public": _b64(ek_public),
        "ek_certificate": None if certificate is None else _b64(certificate),
        "ak_public": _b64(tpm.attestation_public()),
    }


def activate(provider: KeyProvider, challenge: dict[str, Any]) -> str:
    """The secret the TPM recovers from a verifier's challenge, as hex for the verifier."""
    if not isinstance(challenge, dict) or challenge.get("format") != CHALLENGE_FORMAT:
        raise SealError(f"not a {CHALLENGE_FORMAT} document; give the file the verifier made")
    try:
        credential = base64.b64decode(challenge["credential"], validate=True)
        secret = base64.b64decode(challenge["secret"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise SealError("the challenge lacks a base64 credential and secret") from None
    return _tpm(provider).activate_credential(credential, secret).hex()


def quote(provider: KeyProvider, nonce: bytes, release_pcr: int) -> dict[str, Any]:
    """A quote over the boot PCRs and the release PCR, answering the verifier's ``nonce``."""
    tpm = _tpm(provider)
    result = tpm.quote(nonce, (*BOOT_PCRS, release_pcr))
    return {
        "format": QUOTE_FORMAT,
        "quote": _b64(result.attest),
        "signature": _b64(result.signature),
        "pcrs": {str(i): v.hex() for i, v in result.pcrs.items()},
        "ak_public": _b64(tpm.attestation_public()),
    }
