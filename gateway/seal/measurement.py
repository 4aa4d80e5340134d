"""The release measurement: one digest of the installed code, its configuration and models.

The daemon extends a TPM PCR with this digest at start, and the vault's key is sealed to the
resulting PCR value, so a box whose code, configuration or models were changed cannot
unseal the vault. Each part has its own digest (a canonical listing of kind, relative path and
content digest, so it does not depend on directory order, timestamps or where the files
live), and the measurement combines them: a vendor can sign the package and model digests of
a release while each site adds the digest of its own configuration.

What is measured and how the parts combine is defined in ``gateway.verifiers.attestation``:
the security team's verifier must stay one copyable file that imports nothing from callveil,
so the box uses the verifier's definition rather than the other way round.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gateway.verifiers.attestation import ReleaseComponents, component_digest


def release_components(
    package_root: Path, config_path: Path, model_paths: Iterable[Path]
) -> ReleaseComponents:
    """The digests of the package tree, the configuration file and each model (file or tree).

    Raises OSError when something cannot be read: a release that cannot be measured must not
    start.
    """
    return ReleaseComponents(
        component_digest(package_root),
        component_digest(config_path),
        tuple(component_digest(model) for model in model_paths),
    )


def release_measurement(
    package_root: Path, config_path: Path, model_paths: Iterable[Path]
) -> bytes:
    """SHA-256 over the package tree, the configuration file and each model (file or tree)."""
    return release_components(package_root, config_path, model_paths).measurement()
