"""The [keys] and [vault] sections: defaults, limits, and paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


def test_every_relative_path_is_relative_to_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "box.toml"
    path.write_text(
        '[keys]\nstate_dir = "tpm"\nkey_file = "k.soft"\npassphrase_file = "/run/secret"\n'
        '[vault]\npath = "data/vault.db"\nusers_path = "users.db"\naudit_path = "../audit.db"\n'
        '[privacy]\nsampling_key_file = "sampling.key"\n'
    )
    config = load_config(path)
    base = tmp_path / "etc"
    assert config.keys.state_dir == str(base / "tpm")
    assert config.keys.key_file == str(base / "k.soft")
    assert config.keys.passphrase_file == "/run/secret"
    assert config.vault.path == str(base / "data" / "vault.db")
    assert config.vault.users_path == str(base / "users.db")
    assert config.vault.audit_path == str(base / ".." / "audit.db")
    assert config.privacy.sampling_key_file == str(base / "sampling.key")
    assert config.keys.tcti == "device:/dev/tpmrm0"  # not a path: left alone


def test_the_example_documents_the_defaults() -> None:
    config = load_config(REPO / "callveil.example.toml")
    assert config.keys.provider == "tpm" and config.keys.pcr == 23
    assert config.vault.contract_recording_days == 3653


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[keys]\npcr = 7\n", "keys.pcr: 7 cannot hold the release measurement"),
        ('[keys]\nprovider = "file"\n', "use one of tpm, software"),
        ('[keys]\npassphrase = "x"\n', "unknown key 'keys.passphrase'"),
        ("[vault]\nanalytics_recording_days = 6\n", "out of range; use a value from 7"),
        ("[vault]\nsign_every = 0\n", "vault.sign_every = 0 is out of range"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "box.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)
