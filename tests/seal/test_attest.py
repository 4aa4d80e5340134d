"""Attestation end to end: a TPM with an EK certificate, enrolment by credential activation,
quotes checked by the standalone verifier (also run as a copied file with only cryptography)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tpm2_pytss", reason="tpm2-pytss is not installed (pip install tpm2-pytss)")

from cryptography import x509
from tpm2_pytss.types import TPM2B_NAME, TPM2B_PUBLIC
from tpm2_pytss.utils import make_credential as tss_make_credential

from gateway.seal import attest
from gateway.seal.keyprovider import SealError
from gateway.seal.softkey import SoftwareKeyProvider
from gateway.seal.tpm import TpmKeyProvider, extended_pcr
from gateway.verifiers import attestation as verifier
from tests.seal.tpm_helpers import TEST_PCR, manufacture_tpm, reset_pcr, running_swtpm

RELEASE = hashlib.sha256(b"approved release").digest()
OTHER = hashlib.sha256(b"another release").digest()


@pytest.fixture(scope="module")
def maker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A running swtpm manufactured with an EK certificate, and the maker's root CA."""
    root = tmp_path_factory.mktemp("made-tpm")
    ca = manufacture_tpm(root / "state", root / "ca")
    with running_swtpm(root / "state") as tcti:
        yield tcti, ca


@pytest.fixture
def box(maker: tuple[str, Path], tmp_path: Path) -> Iterator[TpmKeyProvider]:
    tcti, _ = maker
    reset_pcr(tcti)
    with TpmKeyProvider(tcti, tmp_path / "keys", measurement=RELEASE, pcr=TEST_PCR) as p:
        yield p


def roundtrip(document: dict) -> dict:
    """What crosses the wire: JSON text."""
    return json.loads(json.dumps(document))


def enrolled(box: TpmKeyProvider, ca: Path) -> bytes:
    cas = [*x509.load_pem_x509_certificates(ca.read_bytes())]
    challenge, state = verifier.challenge(roundtrip(attest.enrolment(box)), cas)
    response = attest.activate(box, roundtrip(challenge))
    return verifier.enrol(state, response)


def test_enrolment_then_quote_verifies(box: TpmKeyProvider, maker: tuple[str, Path]) -> None:
    ak_pem = enrolled(box, maker[1])
    nonce = os.urandom(32)
    document = roundtrip(attest.quote(box, nonce, TEST_PCR))
    verdict = verifier.verify_quote(
        document, nonce=nonce, ak_pem=ak_pem, approved=[OTHER, RELEASE], release_pcr=TEST_PCR
    )
    assert verdict.measurement == RELEASE.hex()
    assert verdict.pcrs[TEST_PCR] == extended_pcr(RELEASE).hex()
    assert sorted(verdict.pcrs) == [*verifier.BOOT_PCRS, TEST_PCR]


def test_replayed_quote_is_refused(box: TpmKeyProvider, maker: tuple[str, Path]) -> None:
    ak_pem = enrolled(box, maker[1])
    old = roundtrip(attest.quote(box, b"first nonce 1234", TEST_PCR))
    with pytest.raises(verifier.AttestationError, match="another nonce"):
        verifier.verify_quote(
            old, nonce=b"second nonce 567", ak_pem=ak_pem, approved=[RELEASE], release_pcr=TEST_PCR
        )


def test_unapproved_release_is_refused(box: TpmKeyProvider, maker: tuple[str, Path]) -> None:
    ak_pem = enrolled(box, maker[1])
    nonce = os.urandom(16)
    document = roundtrip(attest.quote(box, nonce, TEST_PCR))
    with pytest.raises(verifier.AttestationError, match="no approved release"):
        verifier.verify_quote(
            document, nonce=nonce, ak_pem=ak_pem, approved=[OTHER], release_pcr=TEST_PCR
        )


def test_altered_quote_pcrs_or_signature_are_refused(
    box: TpmKeyProvider, maker: tuple[str, Path]
) -> None:
    ak_pem = enrolled(box, maker[1])
    nonce = os.urandom(16)
    good = roundtrip(attest.quote(box, nonce, TEST_PCR))

    def check(document: dict, match: str) -> None:
        with pytest.raises(verifier.AttestationError, match=match):
            verifier.verify_quote(
                document, nonce=nonce, ak_pem=ak_pem, approved=[RELEASE], release_pcr=TEST_PCR
            )

    # a reported PCR value claiming the approved release over a box that runs another one
    lying = json.loads(json.dumps(good))
    lying["pcrs"]["0"] = "11" * 32
    check(lying, "do not match the quoted digest")
    quoted = bytearray(base64.b64decode(good["quote"]))
    for position in (0, len(quoted) // 2, len(quoted) - 1):
        flipped = bytearray(quoted)
        flipped[position] ^= 0x01
        check({**good, "quote": base64.b64encode(flipped).decode()}, "signature does not verify")
    missing = json.loads(json.dumps(good))
    del missing["pcrs"]["3"]
    check(missing, "not those the quote covers")


def test_quote_by_an_unenrolled_key_is_refused(
    box: TpmKeyProvider, maker: tuple[str, Path], tmp_path: Path
) -> None:
    ak_pem = enrolled(box, maker[1])
    # another key set in the same TPM: a genuine AK, but not the one enrolled for this box
    with TpmKeyProvider(maker[0], tmp_path / "other", measurement=RELEASE, pcr=TEST_PCR) as other:
        nonce = os.urandom(16)
        document = roundtrip(attest.quote(other, nonce, TEST_PCR))
    with pytest.raises(verifier.AttestationError, match="another key than this box's enrolled"):
        verifier.verify_quote(
            document, nonce=nonce, ak_pem=ak_pem, approved=[RELEASE], release_pcr=TEST_PCR
        )


def test_software_make_credential_matches_the_tss(box: TpmKeyProvider) -> None:
    """The verifier's own MakeCredential and the TSS's both activate on the real TPM."""
    ek_blob, _ = box.endorsement()
    ak_blob = box.attestation_public()
    ak_name = verifier.parse_public(ak_blob, "AK").name
    assert ak_name == bytes(TPM2B_PUBLIC.unmarshal(ak_blob)[0].get_name())
    secret = os.urandom(32)
    credential, encrypted = verifier.make_credential(
        verifier.parse_public(ek_blob, "EK"), ak_name, secret
    )
    assert box.activate_credential(credential, encrypted) == secret
    ek_public = TPM2B_PUBLIC.unmarshal(ek_blob)[0]
    id_object, tss_secret = tss_make_credential(ek_public, secret, TPM2B_NAME(ak_name))
    assert box.activate_credential(id_object.marshal(), tss_secret.marshal()) == secret


def test_challenge_for_another_ak_is_not_answered(maker: tuple[str, Path], tmp_path: Path) -> None:
    """An attacker's key (here: an AK of another key set) cannot pass as this TPM's AK."""
    tcti = maker[0]
    reset_pcr(tcti)
    # one key set at a time: without a resource manager a new provider flushes the others
    with TpmKeyProvider(tcti, tmp_path / "other", measurement=RELEASE, pcr=TEST_PCR) as other:
        foreign_name = verifier.parse_public(other.attestation_public(), "AK").name
    with TpmKeyProvider(tcti, tmp_path / "box", measurement=RELEASE, pcr=TEST_PCR) as box:
        ek = verifier.parse_public(box.endorsement()[0], "EK")
        credential, encrypted = verifier.make_credential(ek, foreign_name, os.urandom(32))
        with pytest.raises(SealError, match="refused the credential"):
            box.activate_credential(credential, encrypted)


def test_ek_certificate_from_an_unknown_maker_is_refused(
    box: TpmKeyProvider, tmp_path: Path
) -> None:
    stranger = manufacture_tpm(tmp_path / "stranger-state", tmp_path / "stranger-ca")
    cas = [*x509.load_pem_x509_certificates(stranger.read_bytes())]
    with pytest.raises(verifier.AttestationError, match="no given CA certificate issued"):
        verifier.challenge(roundtrip(attest.enrolment(box)), cas)


def test_enrolment_with_a_swapped_ek_certificate_is_refused(
    box: TpmKeyProvider, maker: tuple[str, Path], tmp_path: Path
) -> None:
    document = roundtrip(attest.enrolment(box))
    stranger = manufacture_tpm(tmp_path / "s", tmp_path / "s-ca")
    with (
        running_swtpm(tmp_path / "s") as tcti,
        TpmKeyProvider(tcti, tmp_path / "k", measurement=RELEASE, pcr=TEST_PCR) as other,
    ):
        document["ek_certificate"] = attest.enrolment(other)["ek_certificate"]
    cas = [c for p in (maker[1], stranger) for c in x509.load_pem_x509_certificates(p.read_bytes())]
    with pytest.raises(verifier.AttestationError, match="certifies another key"):
        verifier.challenge(document, cas)


def test_software_provider_cannot_attest(tmp_path: Path) -> None:
    soft = SoftwareKeyProvider(tmp_path / "k", b"pass", scrypt_n=2**14)
    with pytest.raises(SealError, match="needs the TPM key provider"):
        attest.quote(soft, os.urandom(16), TEST_PCR)


def test_standalone_verifier_runs_as_a_copied_file(
    box: TpmKeyProvider, maker: tuple[str, Path], tmp_path: Path
) -> None:
    """The security team's copy: one file, run by an interpreter that cannot import callveil."""
    script = tmp_path / "team" / "attestation.py"
    script.parent.mkdir()
    shutil.copy(verifier.__file__, script)
    env = {"PATH": os.environ["PATH"], "PYTHONNOUSERSITE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-I", str(script), *args],
            cwd=script.parent, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    probe = run("--help")
    assert probe.returncode == 0, probe.stderr
    files = {name: tmp_path / name for name in ("enrol.json", "chal.json", "state.json", "ak.pem")}
    files["enrol.json"].write_text(json.dumps(attest.enrolment(box)))
    made = run(
        "challenge", str(files["enrol.json"]), "--ek-ca", str(maker[1]),
        "--challenge-out", str(files["chal.json"]), "--state-out", str(files["state.json"]),
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert files["state.json"].stat().st_mode & 0o077 == 0
    response = attest.activate(box, json.loads(files["chal.json"].read_text()))
    done = run("enrol", str(files["state.json"]), "--response", response,
               "--ak-out", str(files["ak.pem"]))  # fmt: skip
    assert done.returncode == 0, done.stderr
    nonce = os.urandom(32)
    quote_file = tmp_path / "quote.json"
    quote_file.write_text(json.dumps(attest.quote(box, nonce, TEST_PCR)))
    args = ["quote", str(quote_file), "--ak", str(files["ak.pem"]), "--release-pcr", str(TEST_PCR)]
    ok = run(*args, "--nonce", nonce.hex(), "--approved", RELEASE.hex())
    assert ok.returncode == 0, ok.stderr
    assert f"approved release measurement {RELEASE.hex()}" in ok.stdout
    bad = run(*args, "--nonce", nonce.hex(), "--approved", OTHER.hex())
    assert bad.returncode == 1
    assert "FAILED" in bad.stderr and "no approved release" in bad.stderr
    wrong = run("enrol", str(files["state.json"]), "--response", "00" * 32,
                "--ak-out", str(tmp_path / "x.pem"))  # fmt: skip
    assert wrong.returncode == 1 and "did not recover the secret" in wrong.stderr


def test_attest_commands_with_the_standalone_verifier(
    maker: tuple[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``callveil attest`` on the box, ``callveil verify-attestation`` at the security team."""
    from gateway.cli import main
    from gateway.config import load_config
    from gateway.seal.fromconfig import PACKAGE_ROOT, model_paths
    from gateway.seal.measurement import release_measurement

    tcti, ca = maker
    reset_pcr(tcti)
    config = tmp_path / "callveil.toml"
    config.write_text(f'[keys]\nprovider = "tpm"\ntcti = "{tcti}"\npcr = {TEST_PCR}\n'
                      'state_dir = "tpm-keys"\n')  # fmt: skip
    box = ["-c", str(config), "attest"]
    files = {n: str(tmp_path / n) for n in ("enrol.json", "chal.json", "state", "ak.pem", "q.json")}
    assert main([*box, "enrolment", "--out", files["enrol.json"]]) == 0
    challenge = ["verify-attestation", "challenge", files["enrol.json"], "--ek-ca", str(ca),
                 "--challenge-out", files["chal.json"], "--state-out", files["state"]]  # fmt: skip
    assert main(challenge) == 0
    capsys.readouterr()
    assert main([*box, "activate", files["chal.json"]]) == 0
    response = capsys.readouterr().out.strip()
    assert main(["verify-attestation", "enrol", files["state"], "--response", response,
                 "--ak-out", files["ak.pem"]]) == 0  # fmt: skip
    nonce = os.urandom(20).hex()
    assert main([*box, "quote", "--nonce", nonce, "--out", files["q.json"]]) == 0
    approved = release_measurement(PACKAGE_ROOT, config, model_paths(load_config(config))).hex()
    verify = ["verify-attestation", "quote", files["q.json"], "--nonce", nonce,
              "--ak", files["ak.pem"], "--release-pcr", str(TEST_PCR)]  # fmt: skip
    capsys.readouterr()
    assert main([*verify, "--approved", approved]) == 0
    assert approved in capsys.readouterr().out
    # the configuration is part of the release: an edited one is another measurement
    config.write_text(config.read_text() + "# edited\n")
    edited = release_measurement(PACKAGE_ROOT, config, model_paths(load_config(config)))
    assert main([*verify, "--approved", edited.hex()]) == 1
    capsys.readouterr()
    assert main([*box, "quote", "--nonce", "zz"]) == 2
    assert "must be hex" in capsys.readouterr().err
    # the box itself refuses to run an edited configuration: its keys stay sealed
    assert main([*box, "quote", "--nonce", nonce]) == 2
    assert "another measurement" in capsys.readouterr().err
