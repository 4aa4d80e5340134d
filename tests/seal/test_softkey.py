"""The passphrase-protected key file for boxes without a TPM."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.seal.envelope import Sealer
from gateway.seal.keyprovider import SealError, open_provider
from gateway.seal.softkey import SCRYPT_N, SoftwareKeyProvider

FAST = 2**14
PASS = b"correct horse battery staple"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "box.key"
    SoftwareKeyProvider(path, PASS, scrypt_n=FAST)
    return path


def edit(path: Path, **fields: object) -> None:
    document = json.loads(path.read_bytes())
    document.update(fields)
    path.write_text(json.dumps(document))


def test_create_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "box.key"
    first = SoftwareKeyProvider(path, PASS)  # production parameters, once
    document = json.loads(path.read_bytes())
    assert document["kdf"] == {"name": "scrypt", "n": SCRYPT_N, "r": 8, "p": 1}
    assert len(base64.b64decode(document["salt"])) == 16
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) & 0o077 == 0
    again = SoftwareKeyProvider(path, PASS)
    assert again.unwrap_kek() == first.unwrap_kek() and len(first.unwrap_kek()) == 32
    assert again.public_key_pem() == first.public_key_pem()
    assert first.name == "software"
    assert [p.name for p in path.parent.iterdir()] == ["box.key"]  # no temporary left behind


def test_sign_verifies_with_cryptography(key_file: Path) -> None:
    provider = SoftwareKeyProvider(key_file, PASS)
    public = serialization.load_pem_public_key(provider.public_key_pem())
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    public.verify(provider.sign(b"aggregate"), b"aggregate", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(provider.sign(b"aggregate"), b"aggregatE", ec.ECDSA(hashes.SHA256()))


def test_wrong_passphrase(key_file: Path) -> None:
    with pytest.raises(SealError, match="wrong passphrase"):
        SoftwareKeyProvider(key_file, PASS + b"!")
    with pytest.raises(SealError, match="non-empty passphrase"):
        SoftwareKeyProvider(key_file, b"")


def test_keys_are_not_in_the_file_in_clear(key_file: Path) -> None:
    provider = SoftwareKeyProvider(key_file, PASS)
    kek = provider.unwrap_kek()
    raw = key_file.read_bytes()
    inner = json.loads(raw)
    decoded = b"".join(base64.b64decode(inner[f]) for f in ("salt", "check", "nonce", "ciphertext"))
    for haystack in (raw, decoded):
        assert kek not in haystack and kek[:16] not in haystack
        assert base64.b64encode(kek)[:20] not in haystack
    assert PASS not in raw


def test_readable_by_others_is_refused(key_file: Path) -> None:
    key_file.chmod(0o640)
    with pytest.raises(SealError, match="chmod 600"):
        SoftwareKeyProvider(key_file, PASS)


def test_tampered_ciphertext_is_detected(key_file: Path) -> None:
    ciphertext = bytearray(base64.b64decode(json.loads(key_file.read_bytes())["ciphertext"]))
    original = key_file.read_bytes()
    for i in range(0, len(ciphertext), 7):
        damaged = bytearray(ciphertext)
        damaged[i] ^= 1 << (i % 8)
        edit(key_file, ciphertext=base64.b64encode(bytes(damaged)).decode())
        with pytest.raises(SealError, match="damaged or was modified"):
            SoftwareKeyProvider(key_file, PASS)
        key_file.write_bytes(original)
    assert len(SoftwareKeyProvider(key_file, PASS).unwrap_kek()) == 32


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"nonce": base64.b64encode(bytes(12)).decode()}, "damaged"),
        ({"salt": base64.b64encode(bytes(16)).decode()}, "wrong passphrase"),
        ({"check": base64.b64encode(bytes(32)).decode()}, "wrong passphrase"),
        ({"kdf": {"name": "scrypt", "n": 2**15, "r": 8, "p": 1}}, "wrong passphrase"),
        ({"kdf": {"name": "scrypt", "n": 2**30, "r": 8, "p": 1}}, "outside"),
        ({"kdf": {"name": "scrypt", "n": 3 * 2**14, "r": 8, "p": 1}}, "power of two"),
        ({"kdf": {"name": "pbkdf2", "n": 2**14, "r": 8, "p": 1}}, "unknown key derivation"),
        ({"kdf": {"name": "scrypt", "n": "16384", "r": 8, "p": 1}}, "outside"),
        ({"version": 2}, "version 1"),
        ({"extra": "field"}, "damaged"),
        ({"salt": "not base64!"}, "base64"),
        ({"ciphertext": 5}, "not a string"),
    ],
)
def test_edited_fields_are_detected(key_file: Path, fields: dict, message: str) -> None:
    edit(key_file, **fields)
    with pytest.raises(SealError, match=message):
        SoftwareKeyProvider(key_file, PASS)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(garbage=st.binary(max_size=600))
def test_arbitrary_file_content_is_rejected(key_file: Path, garbage: bytes) -> None:
    original = key_file.read_bytes()
    key_file.write_bytes(garbage)
    try:
        with pytest.raises(SealError):
            SoftwareKeyProvider(key_file, PASS)
    finally:
        key_file.write_bytes(original)


def test_envelope_round_trip(key_file: Path) -> None:
    sealer = Sealer(SoftwareKeyProvider(key_file, PASS))
    assert sealer.open(sealer.seal(b"summary", context=b"c"), context=b"c") == b"summary"
    # a restart opens what the previous run sealed
    assert Sealer(SoftwareKeyProvider(key_file, PASS)).open(sealer.seal(b"x")) == b"x"


def test_software_only_when_configured(key_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SealError, match="key file and its passphrase"):
        open_provider("software", state_dir=tmp_path, measurement=bytes(32))
    with pytest.raises(SealError, match="key file and its passphrase"):
        open_provider("software", state_dir=tmp_path, measurement=bytes(32), key_file=key_file)
    chosen = open_provider(
        "auto", state_dir=tmp_path, measurement=bytes(32), key_file=key_file, passphrase=PASS
    )
    assert chosen.name == "software"
    with pytest.raises(SealError, match="unknown key provider"):
        open_provider("hsm", state_dir=tmp_path, measurement=bytes(32))  # type: ignore[arg-type]
