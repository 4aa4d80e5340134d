"""Vault fixtures: fast software keys per partition, and the seal tests' TPM simulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.seal.envelope import Sealer
from gateway.seal.softkey import SoftwareKeyProvider
from tests.seal.conftest import swtpm_tcti, tpm

__all__ = ["swtpm_tcti", "tpm"]

SCRYPT_N_FAST = 2**14
PASSPHRASE = b"vault tests"


def software_provider(path: Path) -> SoftwareKeyProvider:
    return SoftwareKeyProvider(path, PASSPHRASE, scrypt_n=SCRYPT_N_FAST)


@pytest.fixture(scope="session")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One key file per partition, so each partition has its own KEK."""
    root = tmp_path_factory.mktemp("vault-keys")
    files = {name: root / f"{name}.key" for name in ("analytics", "contract")}
    for path in files.values():
        software_provider(path)
    return files


@pytest.fixture(scope="session")
def sealers(key_files: dict[str, Path]) -> dict[str, Sealer]:
    return {name: Sealer(software_provider(path)) for name, path in key_files.items()}


@pytest.fixture(scope="session")
def keks(key_files: dict[str, Path]) -> list[bytes]:
    return [software_provider(path).unwrap_kek() for path in key_files.values()]
