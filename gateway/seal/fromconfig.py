"""The key provider named by the configuration, opened against the measured release."""

from __future__ import annotations

from pathlib import Path

import gateway
from gateway.config import Config
from gateway.seal.keyprovider import KeyProvider, SealError, open_provider
from gateway.seal.measurement import release_measurement
from gateway.seal.privatefile import read_private

PACKAGE_ROOT = Path(gateway.__file__).resolve().parent


def _passphrase(path: Path) -> bytes:
    try:
        # one trailing newline is what editors and `echo` add; it is not part of the secret
        passphrase = read_private(path).removesuffix(b"\n")
    except FileNotFoundError:
        raise SealError(
            f"keys.passphrase_file {path} does not exist: create it with the passphrase as its "
            f"only content and run: chmod 600 {path}"
        ) from None
    if not passphrase:
        raise SealError(f"keys.passphrase_file {path} is empty: write the passphrase into it")
    return passphrase


def model_paths(config: Config) -> tuple[Path, ...]:
    """The configured models that exist: measured with the release (shipped ones are inside
    the package). A missing model is not measured; the stage that needs it reports it."""
    configured = (config.emotion.model_path, config.keywords.model_path)
    return tuple(Path(p) for p in configured if p and Path(p).exists())


def open_configured_provider(
    config: Config, config_path: Path, *, create: bool = True
) -> KeyProvider:
    """Open ``config.keys``'s provider, or raise SealError; never falls back to another.

    The release measurement covers the installed package, ``config_path`` (the file
    ``config`` was loaded from) and the configured models, so a TPM-sealed vault stays shut
    after any of them changes. ``create=False``: TPM keys must exist already.
    """
    keys = config.keys
    try:
        measurement = release_measurement(PACKAGE_ROOT, config_path, model_paths(config))
    except OSError as exc:
        raise SealError(
            f"cannot measure the release ({exc}); a release that cannot be measured does not "
            "open its keys: check that the package and the configuration file are readable"
        ) from None
    if keys.provider == "software":
        return open_provider(
            "software",
            state_dir=Path(keys.state_dir),
            measurement=measurement,
            key_file=Path(keys.key_file),
            passphrase=_passphrase(Path(keys.passphrase_file)),
        )
    return open_provider(
        "tpm",
        state_dir=Path(keys.state_dir),
        measurement=measurement,
        tcti=keys.tcti,
        pcr=keys.pcr,
        create=create,
    )
