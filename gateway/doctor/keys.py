"""The key provider: the TPM device, opening the keys, and a seal/open and sign round trip.

Keys are opened exactly as the daemon opens them (``open_configured_provider``: with the TPM
that extends the release PCR first), so a changed release, configuration or model shows up
here as it would at start. The doctor never creates keys: run as root before the service's
first start, it would leave key files the service user cannot read.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import Config
from gateway.doctor.findings import Finding, Status, fail, ok, warn
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.keyprovider import SealError
from gateway.seal.privatefile import read_private

DEVICE = "keys.tpm"
SEAL = "keys.seal"
_CONTEXT = b"callveil doctor"


def check_keys(config: Config, config_path: Path) -> list[Finding]:
    keys = config.keys
    findings = []
    if keys.provider == "tpm":
        device = _tpm_device(keys.tcti)
        if device is not None:
            findings.append(device)
            if device.status is not Status.OK:
                return findings
    missing = _keys_missing(config)
    if missing is not None:
        findings.append(missing)
        return findings
    findings.append(_round_trip(config, config_path))
    return findings


def _tpm_device(tcti: str) -> Finding | None:
    """The device node of a ``device:`` TCTI (None for a simulator or another TCTI)."""
    kind, _, rest = tcti.partition(":")
    if kind != "device":
        return None
    device = Path(rest or "/dev/tpmrm0")
    if not device.exists():
        return fail(
            DEVICE,
            f"no TPM device {device} (keys.tcti = {tcti!r})",
            "enable the TPM in the firmware (fTPM / PTT, or fit a TPM module) and load its "
            "driver (tpm_tis or tpm_crb); a box without a TPM must set keys.provider = "
            '"software" explicitly',
        )
    if not os.access(device, os.R_OK | os.W_OK):
        return fail(
            DEVICE,
            f"{device} exists but this user may not open it",
            "run the doctor as root or as the service user, which needs the group tss "
            "(usermod -aG tss callveil)",
        )
    return ok(DEVICE, f"{device} is present")


def _keys_missing(config: Config) -> Finding | None:
    keys = config.keys
    if keys.provider == "software":
        key_file = Path(keys.key_file)
        if key_file.exists():
            return None
        passphrase = Path(keys.passphrase_file)
        try:
            read_private(passphrase)
        except FileNotFoundError:
            return fail(
                SEAL,
                f"keys.passphrase_file {passphrase} does not exist",
                f"write the passphrase into it as its only content and run: chmod 600 {passphrase}",
            )
        except (SealError, OSError) as exc:
            return fail(SEAL, f"keys.passphrase_file {passphrase} cannot be used", str(exc))
        where = f"key file {key_file}"
    else:
        state = Path(keys.state_dir)
        if state.is_dir() and any(state.iterdir()):
            return None
        where = f"TPM key directory {state}"
    return warn(
        SEAL,
        f"no keys yet ({where} is missing or empty); the doctor does not create them",
        "start the service (systemctl start callveil), which creates them on its first start "
        "as the service user, then run the doctor again",
    )


def _round_trip(config: Config, config_path: Path) -> Finding:
    try:
        with contextlib.closing(open_configured_provider(config, config_path)) as provider:
            probe = secrets.token_bytes(32)
            sealer = Sealer(provider)
            if sealer.open(sealer.seal(probe, context=_CONTEXT), context=_CONTEXT) != probe:
                return fail(
                    SEAL,
                    f"the {provider.name} keys seal and open, but return other bytes",
                    "reinstall the approved release; report this if it persists",
                )
            public = serialization.load_pem_public_key(provider.public_key_pem())
            if not isinstance(public, ec.EllipticCurvePublicKey):
                return fail(
                    SEAL, "the publishing key is not an EC key", "restore the keys from backup"
                )
            public.verify(provider.sign(probe), probe, ec.ECDSA(hashes.SHA256()))
            name = provider.name
    except SealError as exc:
        return fail(SEAL, f"the {config.keys.provider} keys do not open", str(exc))
    except InvalidSignature:
        return fail(
            SEAL,
            "the publishing key's signature does not verify with its own public key",
            "restore the keys from backup; published aggregates would be rejected",
        )
    return ok(SEAL, f"{name} keys open; a record sealed and opened, a payload signed and verified")
