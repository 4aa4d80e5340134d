"""Approved updates on the TPM: the KEK sealed to several releases, rollback, and pruning."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss is not installed (pip install tpm2-pytss)")

from tpm2_pytss import ESAPI
from tpm2_pytss.constants import TPM2_ALG, TPM2_CC, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
)

from gateway.seal.keyprovider import SealError
from gateway.seal.tpm import TpmKeyProvider, extended_pcr
from tests.seal.tpm_helpers import TEST_PCR, BusRecorder, reset_pcr

RELEASE = hashlib.sha256(b"approved release").digest()
UPDATE = hashlib.sha256(b"approved update").digest()
OTHER = hashlib.sha256(b"another approved update").digest()
UNAPPROVED = hashlib.sha256(b"modified release").digest()
MISMATCH = "differ from those the vault was sealed to"


def provider(tcti: str, state: Path, measurement: bytes = RELEASE) -> TpmKeyProvider:
    return TpmKeyProvider(tcti, state, measurement=measurement, pcr=TEST_PCR)


def approval(measurement: bytes) -> str:
    return f"kek-{extended_pcr(measurement).hex()[:16]}.tpm"


def sealed(state: Path) -> list[str]:
    return sorted(p.name for p in state.glob("kek*.tpm"))


def boot(tcti: str, state: Path, measurement: bytes) -> bytes:
    """Reboot into the release measuring ``measurement`` and return the KEK it unseals."""
    reset_pcr(tcti)
    with provider(tcti, state, measurement) as p:
        return p.unwrap_kek()


def test_update_is_approved_beside_the_running_release(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        assert p.reseal(UPDATE) is True
        assert p.reseal(UPDATE) is False  # approved already
        assert p.reseal(RELEASE) is False  # the running release
        assert p.unwrap_kek() == kek  # still opens in this boot
    assert sealed(state) == sorted([approval(UPDATE), "kek.tpm"])
    for f in state.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert boot(tpm, state, UPDATE) == kek
    assert boot(tpm, state, RELEASE) == kek  # going back still opens the vault
    with pytest.raises(SealError, match=MISMATCH):
        boot(tpm, state, UNAPPROVED)
    # the update, running, may approve a further one: the chain of approvals goes on
    reset_pcr(tpm)
    with provider(tpm, state, UPDATE) as p:
        assert p.reseal(OTHER) is True
    assert boot(tpm, state, OTHER) == kek


def test_prune_by_the_update_leaves_only_it(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        p.reseal(UPDATE)
        p.reseal(OTHER)  # an update approved, then abandoned
    reset_pcr(tpm)
    with provider(tpm, state, UPDATE) as p:
        # its copy replaces the previous release's, and the abandoned approval goes
        assert p.prune() == 2
        assert p.prune() == 0
        assert p.unwrap_kek() == kek
    assert sealed(state) == ["kek.tpm"]
    for gone in (RELEASE, OTHER):
        with pytest.raises(SealError, match=MISMATCH):
            boot(tpm, state, gone)
    assert boot(tpm, state, UPDATE) == kek


def test_prune_after_going_back_forgets_the_failed_update(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        p.reseal(UPDATE)
    assert boot(tpm, state, UPDATE) == kek  # it booted, then failed its health check
    reset_pcr(tpm)
    with provider(tpm, state) as p:
        assert p.prune() == 1
    assert sealed(state) == ["kek.tpm"]
    with pytest.raises(SealError, match=MISMATCH):
        boot(tpm, state, UPDATE)
    assert boot(tpm, state, RELEASE) == kek


def test_prune_keeps_the_releases_asked_for(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        p.reseal(OTHER)
        p.reseal(UPDATE)
        assert p.prune(keep=[UPDATE]) == 1
    assert sealed(state) == sorted([approval(UPDATE), "kek.tpm"])
    assert boot(tpm, state, UPDATE) == kek
    reset_pcr(tpm)
    with provider(tpm, state, UPDATE) as p:
        # the running update keeps the previous release too: it is stored as kek.tpm
        assert p.prune(keep=[RELEASE]) == 0
    assert boot(tpm, state, RELEASE) == kek


def test_unapproved_release_can_neither_approve_nor_prune(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        p.reseal(UPDATE)
    before = {f.name: f.read_bytes() for f in state.iterdir()}
    reset_pcr(tpm)
    with provider(tpm, state, UNAPPROVED) as p:
        with pytest.raises(SealError, match="cannot approve another release") as raised:
            p.reseal(OTHER)
        assert MISMATCH in str(raised.value) and "callveil reseal" in str(raised.value)
        with pytest.raises(SealError, match="nothing was removed"):
            p.prune()
    assert {f.name: f.read_bytes() for f in state.iterdir()} == before


def test_the_blobs_policy_decides_not_its_name(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        p.reseal(UPDATE)
    # the update's approval under the name of another release: that release still cannot open
    (state / approval(UPDATE)).rename(state / approval(OTHER))
    with pytest.raises(SealError, match=MISMATCH):
        boot(tpm, state, OTHER)
    # a damaged approval fails closed for its release and leaves the others alone
    (state / approval(OTHER)).rename(state / approval(UPDATE))
    blob = (state / approval(UPDATE)).read_bytes()
    (state / approval(UPDATE)).write_bytes(blob[:-1])
    with pytest.raises(SealError, match="damaged"):
        boot(tpm, state, UPDATE)
    assert boot(tpm, state, RELEASE) == kek


def test_opening_unseals_only_the_matching_blob(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        p.reseal(UPDATE)
        p.reseal(OTHER)
    for measurement in (RELEASE, OTHER):
        reset_pcr(tpm)
        recorder = BusRecorder(tpm)
        try:
            with provider(recorder.tcti, state, measurement) as p:
                start = len(recorder.commands)
                assert p.unwrap_kek() == kek
                issued = recorder.commands[start:]
        finally:
            recorder.close()
        # the blob is chosen by computing its policy: one load, one unseal, nothing tried
        assert issued.count(TPM2_CC.Load) == 1 and issued.count(TPM2_CC.Unseal) == 1


def test_sealing_never_shows_the_kek_on_the_bus(tpm: str, tmp_path: Path) -> None:
    recorder = BusRecorder(tpm)
    try:
        # creating the keys, unsealing and approving an update, all through the probe
        with provider(recorder.tcti, tmp_path / "tpm") as p:
            kek = p.unwrap_kek()
            p.reseal(UPDATE)
        assert kek not in recorder.requests and kek not in recorder.responses
        # control: sealing without parameter encryption shows the data to the probe
        with ESAPI(recorder.tcti) as ectx:
            template = TPM2B_PUBLIC.parse(
                "ecc256:aes128cfb",
                objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS,
            )
            primary = ectx.create_primary(None, template)[0]
            sealed_template = TPM2B_PUBLIC(
                TPMT_PUBLIC(
                    type=TPM2_ALG.KEYEDHASH,
                    nameAlg=TPM2_ALG.SHA256,
                    objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
                )
            )
            sealed_template.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
            data = TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(kek))
            ectx.create(primary, TPM2B_SENSITIVE_CREATE(data), sealed_template)
            ectx.flush_context(primary)
        assert kek in recorder.requests
    finally:
        recorder.close()


def test_no_keys_are_created_when_asked_not_to(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with pytest.raises(SealError, match="no vault key is sealed") as raised:
        TpmKeyProvider(tpm, state, measurement=RELEASE, pcr=TEST_PCR, create=False)
    assert str(state) in str(raised.value)
    assert not state.exists()
    with provider(tpm, state):
        pass  # the daemon's first start creates them
    reset_pcr(tpm)
    with TpmKeyProvider(tpm, state, measurement=RELEASE, pcr=TEST_PCR, create=False) as p:
        assert len(p.unwrap_kek()) == 32
