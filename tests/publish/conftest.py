"""Fixtures for MQTT tests: a real Mosquitto with TLS, client certificates, an ACL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gateway.seal.softkey import SoftwareKeyProvider
from tests.publish.broker import Broker
from tests.seal.conftest import swtpm_tcti, tpm

__all__ = ["default_logging", "swtpm_tcti", "tpm"]

PASSPHRASE = b"publish tests"
# two boxes at two sites, and the central feed
ACL = {
    "box-a": ["topic write callveil/v1/rome/box-a/#"],
    "box-b": ["topic write callveil/v1/milan/box-b/#"],
    "feed": ["topic read callveil/v1/+/+/#"],
}
SITES = {"box-a": "rome", "box-b": "milan"}


def software_provider(path: Path) -> SoftwareKeyProvider:
    return SoftwareKeyProvider(path, PASSPHRASE, scrypt_n=2**14)


@pytest.fixture(autouse=True)
def default_logging() -> Iterator[None]:
    """structlog as unconfigured: an earlier test's main() may have bound it to a closed
    captured stream, and a log call from a paho thread would then fail."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def box_key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A software signing key per box, made once."""
    root = tmp_path_factory.mktemp("box-keys")
    files = {box: root / f"{box}.key" for box in SITES}
    for path in files.values():
        software_provider(path)
    return files


@pytest.fixture
def providers(box_key_files: dict[str, Path]) -> dict[str, SoftwareKeyProvider]:
    return {box: software_provider(path) for box, path in box_key_files.items()}


@pytest.fixture
def keys_dir(tmp_path: Path, providers: dict[str, SoftwareKeyProvider]) -> Path:
    """The feed's registry: box-a only, so box-b is an unknown box."""
    directory = tmp_path / "boxes"
    directory.mkdir()
    (directory / "box-a.pem").write_bytes(providers["box-a"].public_key_pem())
    return directory


@pytest.fixture
def broker() -> Iterator[Broker]:
    broker = Broker(ACL)
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
