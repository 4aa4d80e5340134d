"""The TPM key provider against a real TPM simulator (swtpm)."""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss is not installed (pip install tpm2-pytss)")

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tpm2_pytss import ESAPI
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_SE, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DIGEST,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPML_DIGEST_VALUES,
    TPMT_HA,
    TPMT_SYM_DEF,
    TPMU_HA,
)

import gateway
from gateway.seal.envelope import Sealer
from gateway.seal.keyprovider import SealError, open_provider
from gateway.seal.measurement import release_measurement
from gateway.seal.tpm import TpmKeyProvider, extended_pcr
from tests.seal.tpm_helpers import TEST_PCR, BusRecorder, free_port_pair, reset_pcr, running_swtpm

REPO = Path(__file__).resolve().parents[2]
RELEASE = hashlib.sha256(b"approved release").digest()
MODIFIED = hashlib.sha256(b"modified release").digest()
MISMATCH = "differ from those the vault was sealed to"


def provider(tcti: str, state: Path, measurement: bytes = RELEASE) -> TpmKeyProvider:
    return TpmKeyProvider(tcti, state, measurement=measurement, pcr=TEST_PCR)


def first_kek(tcti: str, state: Path) -> bytes:
    with provider(tcti, state) as p:
        return p.unwrap_kek()


def pcr_value(tcti: str) -> bytes:
    with ESAPI(tcti) as ectx:
        # keep the list alive while reading it: its items point into its memory
        values = ectx.pcr_read(f"sha256:{TEST_PCR}")[2]
        return bytes(values.digests[0])


def test_keys_survive_a_restart(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    with provider(tpm, state) as p:
        kek = p.unwrap_kek()
        pem = p.public_key_pem()
        ak_pem = p.attestation_public_key_pem()
    assert len(kek) == 32
    assert pcr_value(tpm) == extended_pcr(RELEASE)
    # daemon restart in the same boot: the PCR already holds this release, no second extend
    with provider(tpm, state) as p:
        assert p.extend_measurement(RELEASE) is False
        assert p.unwrap_kek() == kek
        assert p.public_key_pem() == pem
        assert p.attestation_public_key_pem() == ak_pem
    assert pcr_value(tpm) == extended_pcr(RELEASE)
    # reboot: PCR back to zero, measured again, same keys
    reset_pcr(tpm)
    with provider(tpm, state) as p:
        assert p.unwrap_kek() == kek
    assert sorted(f.name for f in state.iterdir()) == [
        "ak.tpm", "kek.tpm", "primary.pub", "signer.tpm",
    ]  # fmt: skip
    for f in state.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_kek_is_never_written_to_disk(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    kek = first_kek(tpm, state)
    for f in state.iterdir():
        content = f.read_bytes()
        assert kek not in content and kek[:16] not in content and kek[16:] not in content, f


def test_modified_release_fails_closed_until_approved_runs(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    kek = first_kek(tpm, state)
    reset_pcr(tpm)  # reboot into a modified release, which measures itself honestly
    with provider(tpm, state, MODIFIED) as p:
        with pytest.raises(SealError, match=MISMATCH) as raised:
            p.unwrap_kek()
        assert "reseal" in str(raised.value) and f"PCR {TEST_PCR}" in str(raised.value)
        with pytest.raises(SealError, match=MISMATCH):
            Sealer(p)
    reset_pcr(tpm)  # reboot into the approved release
    with provider(tpm, state) as p:
        assert p.unwrap_kek() == kek


def test_pcr_extended_by_someone_else_refuses_to_start(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    with ESAPI(tpm) as ectx:
        value = TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=MODIFIED))
        ectx.pcr_extend(getattr(ESYS_TR, f"PCR{TEST_PCR}"), TPML_DIGEST_VALUES([value]))
    with pytest.raises(SealError, match="already holds another measurement"):
        provider(tpm, state)
    # and a provider that is running cannot be made to measure a second release
    reset_pcr(tpm)
    with provider(tpm, state) as p, pytest.raises(SealError, match="already holds another"):
        p.extend_measurement(MODIFIED)


def test_changed_configuration_cannot_unseal(tpm: str, tmp_path: Path) -> None:
    config = tmp_path / "callveil.toml"
    shutil.copy(REPO / "callveil.example.toml", config)
    package = Path(gateway.__file__).parent
    state = tmp_path / "tpm"
    with provider(tpm, state, release_measurement(package, config, [])) as p:
        Sealer(p)
    config.write_text(config.read_text() + "\n# edited\n")
    reset_pcr(tpm)
    modified = release_measurement(package, config, [])
    with provider(tpm, state, modified) as p, pytest.raises(SealError, match=MISMATCH):
        p.unwrap_kek()


def test_publishing_signature_verifies_with_cryptography(tpm: str, tmp_path: Path) -> None:
    data = b'{"site": "test", "calls": 12}'
    with provider(tpm, tmp_path / "tpm") as p:
        signature = p.sign(data)
        public = serialization.load_pem_public_key(p.public_key_pem())
        ak = serialization.load_pem_public_key(p.attestation_public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    public.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(signature, data + b" ", ec.ECDSA(hashes.SHA256()))
    assert isinstance(ak, ec.EllipticCurvePublicKey) and ak.curve.name == "secp256r1"
    assert ak.public_numbers() != public.public_numbers()


def test_attestation_key_is_restricted_and_publishing_key_is_not(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    for name, restricted in (("ak", True), ("signer", False)):
        public, _ = TPM2B_PUBLIC.unmarshal((state / f"{name}.tpm").read_bytes())
        attrs = public.publicArea.objectAttributes
        assert bool(attrs & TPMA_OBJECT.RESTRICTED) is restricted, name
        assert attrs & TPMA_OBJECT.SIGN_ENCRYPT and attrs & TPMA_OBJECT.FIXEDTPM
    kek_public, _ = TPM2B_PUBLIC.unmarshal((state / "kek.tpm").read_bytes())
    # no password path: only the PCR policy releases the KEK
    assert not kek_public.publicArea.objectAttributes & TPMA_OBJECT.USERWITHAUTH


def test_sealer_on_tpm_never_talks_to_the_tpm_again(tpm: str, tmp_path: Path) -> None:
    data = bytes(range(256)) * 256
    with provider(tpm, tmp_path / "tpm") as p:
        sealer = Sealer(p)
    # the connection is closed: seal and open work from the KEK in memory
    with pytest.raises(SealError, match="closed"):
        p.sign(b"x")
    assert sealer.open(sealer.seal(data, context=b"r1"), context=b"r1") == data


def test_kek_does_not_cross_the_bus_in_clear(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    kek = first_kek(tpm, state)
    reset_pcr(tpm)
    recorder = BusRecorder(tpm)
    try:
        with provider(recorder.tcti, state) as p:
            assert p.unwrap_kek() == kek
        assert kek not in recorder.responses
        # control: the same unseal without response encryption shows the KEK to the probe
        data = (state / "kek.tpm").read_bytes()
        public, used = TPM2B_PUBLIC.unmarshal(data)
        private = TPM2B_PRIVATE.unmarshal(data[used:])[0]
        with ESAPI(recorder.tcti) as ectx:
            template = TPM2B_PUBLIC.parse(
                "ecc256:aes128cfb",
                objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS,
            )
            primary = ectx.create_primary(None, template)[0]
            handle = ectx.load(primary, private, public)
            no_encryption = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
            session = ectx.start_auth_session(
                ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, no_encryption, TPM2_ALG.SHA256
            )
            ectx.policy_pcr(session, TPM2B_DIGEST(), f"sha256:{TEST_PCR}")
            assert bytes(ectx.unseal(handle, session1=session)) == kek
            for h in (handle, primary):
                ectx.flush_context(h)
        assert kek in recorder.responses
    finally:
        recorder.close()


def test_damaged_kek_blob_is_detected(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    blob = (state / "kek.tpm").read_bytes()
    with provider(tpm, state) as p:
        for bit in range(len(blob) * 8):
            damaged = bytearray(blob)
            damaged[bit // 8] ^= 0x80 >> (bit % 8)
            (state / "kek.tpm").write_bytes(bytes(damaged))
            with pytest.raises(SealError):
                p.unwrap_kek()
        for damaged in (blob[:-1], blob + b"\0", b""):
            (state / "kek.tpm").write_bytes(damaged)
            with pytest.raises(SealError, match="damaged"):
                p.unwrap_kek()
        (state / "kek.tpm").write_bytes(blob)
        assert len(p.unwrap_kek()) == 32


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=400))
def test_arbitrary_key_blob_is_rejected(tpm: str, tmp_path: Path, garbage: bytes) -> None:
    state = tmp_path / "tpm"
    if not (state / "kek.tpm").exists():
        first_kek(tpm, state)
    target = state / "signer.tpm"
    original = target.read_bytes()
    target.write_bytes(garbage)
    try:
        with provider(tpm, state) as p, pytest.raises(SealError):
            p.sign(b"data")
    finally:
        target.write_bytes(original)


def test_damaged_signing_blob_is_detected(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    blob = (state / "signer.tpm").read_bytes()
    with provider(tpm, state) as p:
        for i in range(0, len(blob), 3):
            damaged = bytearray(blob)
            damaged[i] ^= 0x80 >> (i % 8)
            (state / "signer.tpm").write_bytes(bytes(damaged))
            with pytest.raises(SealError):
                p.sign(b"data")


def test_keys_from_another_tpm_are_refused(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    with running_swtpm(tmp_path / "other-tpm") as other:
        with pytest.raises(SealError, match="cleared or replaced"):
            provider(other, state)
        # without the storage key's record, the other TPM still cannot load the KEK
        (state / "primary.pub").unlink()
        with provider(other, state) as p, pytest.raises(SealError, match="another TPM"):
            p.unwrap_kek()


def test_world_readable_blob_is_refused(tpm: str, tmp_path: Path) -> None:
    state = tmp_path / "tpm"
    first_kek(tpm, state)
    (state / "kek.tpm").chmod(0o644)
    with provider(tpm, state) as p, pytest.raises(SealError, match="chmod 600"):
        p.unwrap_kek()


def test_unreachable_tpm_fails_closed(tmp_path: Path) -> None:
    tcti = f"swtpm:host=127.0.0.1,port={free_port_pair()}"
    with pytest.raises(SealError, match="no TPM reachable") as raised:
        open_provider("tpm", state_dir=tmp_path, measurement=RELEASE, tcti=tcti)
    assert tcti in str(raised.value) and "/dev/tpmrm0" in str(raised.value)
    assert "software key provider" in str(raised.value)
    # "auto" without a configured key file means the TPM: no silent switch to software
    with pytest.raises(SealError, match="no TPM reachable"):
        open_provider("auto", state_dir=tmp_path, measurement=RELEASE, tcti=tcti)
    assert list(tmp_path.iterdir()) == []


def test_default_device_is_named_when_missing(tmp_path: Path) -> None:
    if Path("/dev/tpmrm0").exists():
        pytest.skip("this machine has a TPM at /dev/tpmrm0")
    with pytest.raises(SealError, match="'device:/dev/tpmrm0'"):
        open_provider("tpm", state_dir=tmp_path, measurement=RELEASE)


def test_open_provider_tpm(tpm: str, tmp_path: Path) -> None:
    p = open_provider(
        "tpm", state_dir=tmp_path / "tpm", measurement=RELEASE, tcti=tpm, pcr=TEST_PCR
    )
    try:
        assert p.name == "tpm"
        assert len(p.unwrap_kek()) == 32
    finally:
        p.close()


def test_bad_arguments_are_refused(tpm: str, tmp_path: Path) -> None:
    with pytest.raises(SealError, match="cannot hold the release measurement"):
        TpmKeyProvider(tpm, tmp_path, measurement=RELEASE, pcr=7)
    with pytest.raises(SealError, match="SHA-256 digest"):
        TpmKeyProvider(tpm, tmp_path, measurement=b"short", pcr=TEST_PCR)
