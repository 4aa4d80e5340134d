"""Opening the configured key provider: software from a 0600 passphrase file, TPM via swtpm."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import load_config
from gateway.seal.envelope import Sealer
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.keyprovider import KeyProvider, SealError
from tests.seal.tpm_helpers import TEST_PCR, free_port_pair, reset_pcr


def write_config(directory: Path, keys: str) -> Path:
    path = directory / "box.toml"
    path.write_text(f"[keys]\n{keys}\n")
    return path


def software_config(directory: Path, passphrase: bytes = b"a long passphrase\n") -> Path:
    secret = directory / "secret"
    secret.write_bytes(passphrase)
    secret.chmod(0o600)
    return write_config(
        directory, 'provider = "software"\nkey_file = "state/keys.soft"\npassphrase_file = "secret"'
    )


def check_signs(provider: KeyProvider) -> None:
    key = serialization.load_pem_public_key(provider.public_key_pem())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    key.verify(provider.sign(b"head"), b"head", ec.ECDSA(hashes.SHA256()))


def test_software_provider_from_relative_paths(tmp_path: Path) -> None:
    path = software_config(tmp_path)
    config = load_config(path)
    assert config.keys.key_file == str(tmp_path / "state" / "keys.soft")
    provider = open_configured_provider(config, path)
    assert provider.name == "software"
    assert (tmp_path / "state" / "keys.soft").stat().st_mode & 0o777 == 0o600
    check_signs(provider)
    blob = Sealer(provider, label="analytics").seal(b"record")
    # the trailing newline of the file is not part of the passphrase: "a long passphrase" opens it
    (tmp_path / "secret").write_bytes(b"a long passphrase")
    again = open_configured_provider(load_config(path), path)
    assert Sealer(again, label="analytics").open(blob) == b"record"


def test_wrong_passphrase_fails_closed(tmp_path: Path) -> None:
    path = software_config(tmp_path)
    open_configured_provider(load_config(path), path)
    (tmp_path / "secret").write_bytes(b"another passphrase")
    with pytest.raises(SealError, match="wrong passphrase"):
        open_configured_provider(load_config(path), path)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda secret: secret.chmod(0o644), "chmod 600"),
        (lambda secret: secret.unlink(), "does not exist"),
        (lambda secret: secret.write_bytes(b"\n"), "is empty"),
    ],
)
def test_passphrase_file_problems_are_explained(tmp_path: Path, setup, message: str) -> None:
    path = software_config(tmp_path)
    setup(tmp_path / "secret")
    with pytest.raises(SealError, match=message):
        open_configured_provider(load_config(path), path)


def test_no_tpm_fails_closed_without_falling_back(tmp_path: Path) -> None:
    port = free_port_pair()  # nothing listens there
    path = write_config(
        tmp_path,
        f'provider = "tpm"\ntcti = "swtpm:host=127.0.0.1,port={port}"\npcr = 16\n'
        f'state_dir = "tpm"\nkey_file = "keys.soft"',
    )
    with pytest.raises(SealError, match="Nothing will be stored"):
        open_configured_provider(load_config(path), path)
    assert not (tmp_path / "keys.soft").exists()


def tpm_config(directory: Path, tcti: str, extra: str = "") -> Path:
    return write_config(
        directory,
        f'provider = "tpm"\ntcti = "{tcti}"\npcr = {TEST_PCR}\nstate_dir = "tpm"\n{extra}',
    )


def test_tpm_provider_is_bound_to_configuration_and_models(tpm: str, tmp_path: Path) -> None:
    model = tmp_path / "vosk-model"
    (model / "am").mkdir(parents=True)
    (model / "am" / "final.mdl").write_bytes(b"acoustic model weights")
    path = tpm_config(tmp_path, tpm, '[keywords]\nmodel_path = "vosk-model"\n')
    provider = open_configured_provider(load_config(path), path)
    try:
        assert provider.name == "tpm"
        check_signs(provider)
        blob = Sealer(provider, label="contract").seal(b"evidence")
    finally:
        provider.close()
    # same boot, same release and configuration: opens again
    provider = open_configured_provider(load_config(path), path)
    try:
        assert Sealer(provider, label="contract").open(blob) == b"evidence"
    finally:
        provider.close()
    # a changed model is a changed release; put back, the box opens again
    (model / "am" / "final.mdl").write_bytes(b"acoustic model weights, retrained")
    with pytest.raises(SealError, match="already holds another measurement"):
        open_configured_provider(load_config(path), path)
    (model / "am" / "final.mdl").write_bytes(b"acoustic model weights")
    open_configured_provider(load_config(path), path).close()
    # a changed configuration is a changed release: refused in this boot and after a reboot
    path.write_text(path.read_text() + "# edited\n")
    with pytest.raises(SealError, match="already holds another measurement"):
        open_configured_provider(load_config(path), path)
    reset_pcr(tpm)
    provider = open_configured_provider(load_config(path), path)
    try:
        with pytest.raises(SealError, match="differ from those the vault was sealed to"):
            provider.unwrap_kek()
    finally:
        provider.close()
