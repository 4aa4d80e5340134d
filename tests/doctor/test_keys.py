"""The keys check: the software provider from a passphrase file, and a real TPM (swtpm)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from gateway.config import load_config
from gateway.doctor.findings import Status
from gateway.doctor.keys import check_keys
from gateway.seal.fromconfig import open_configured_provider
from gateway.seal.softkey import SoftwareKeyProvider
from tests.doctor.boxes import PASSPHRASE, write_box
from tests.seal.tpm_helpers import TEST_PCR, reset_pcr


def first_start(config_path: Path) -> None:
    """What the service does on its first start: open the keys, creating them."""
    config = load_config(config_path)
    with contextlib.closing(open_configured_provider(config, config_path)):
        pass


def statuses(config_path: Path) -> list[tuple[str, Status, str, str]]:
    findings = check_keys(load_config(config_path), config_path)
    return [(f.check, f.status, f.detail, f.fix) for f in findings]


def test_software_keys_seal_open_and_sign(tmp_path: Path) -> None:
    path = write_box(tmp_path)
    SoftwareKeyProvider(tmp_path / "state" / "keys.soft", PASSPHRASE, scrypt_n=2**14)
    ((check, status, detail, _),) = statuses(path)
    assert (check, status) == ("keys.seal", Status.OK)
    assert detail.startswith("software keys open; a record sealed and opened")


def test_keys_not_created_yet_are_not_created_by_the_doctor(tmp_path: Path) -> None:
    path = write_box(tmp_path)
    ((_, status, detail, fix),) = statuses(path)
    assert status is Status.WARN
    assert "no keys yet" in detail and "first start" in fix
    assert not (tmp_path / "state" / "keys.soft").exists()


def test_missing_passphrase_file_fails(tmp_path: Path) -> None:
    path = write_box(tmp_path)
    first_start(path)
    (tmp_path / "passphrase").unlink()
    ((_, status, detail, fix),) = statuses(path)
    assert status is Status.FAIL
    assert detail == "the software keys do not open"
    assert f"keys.passphrase_file {tmp_path / 'passphrase'} does not exist" in fix
    # before the first start too: the service could not create its keys either
    (tmp_path / "state" / "keys.soft").unlink()
    ((_, status, detail, _),) = statuses(path)
    assert status is Status.FAIL and "does not exist" in detail


def test_wrong_passphrase_fails(tmp_path: Path) -> None:
    path = write_box(tmp_path)
    first_start(path)
    (tmp_path / "passphrase").write_bytes(b"another passphrase")
    ((_, status, _, fix),) = statuses(path)
    assert status is Status.FAIL
    assert "wrong passphrase" in fix


def test_missing_tpm_device_fails(tmp_path: Path) -> None:
    path = write_box(tmp_path, keys={"provider": "tpm", "tcti": "device:/dev/tpmrm-absent"})
    ((check, status, detail, fix),) = statuses(path)
    assert (check, status) == ("keys.tpm", Status.FAIL)
    assert detail == "no TPM device /dev/tpmrm-absent (keys.tcti = 'device:/dev/tpmrm-absent')"
    assert 'keys.provider = "software"' in fix


def test_tpm_keys_and_a_changed_release(tmp_path: Path, tpm: str) -> None:
    path = write_box(tmp_path, keys={"provider": "tpm", "tcti": tpm, "pcr": TEST_PCR})
    ((_, status, detail, _),) = statuses(path)
    assert status is Status.WARN and "TPM key directory" in detail
    first_start(path)
    ((_, status, detail, _),) = statuses(path)
    assert (status, detail.split(";")[0]) == (Status.OK, "tpm keys open")
    # an unapproved change of the configuration, then a reboot: the vault key stays sealed
    path.write_text(path.read_text() + "[site]\nname = 'changed'\n")
    reset_pcr(tpm)
    ((_, status, detail, fix),) = statuses(path)
    assert (status, detail) == (Status.FAIL, "the tpm keys do not open")
    assert "reseal" in fix
