"""Verify a callveil box's TPM: enrol its attestation key, then check its quotes.

Enrolment, once per box:

1. the box prints its endorsement key (EK), the EK's certificate and its attestation key (AK):
   ``callveil attest enrolment``;
2. ``challenge`` checks the EK certificate against the TPM makers' CA certificates, checks that
   the AK is a restricted signing key that cannot leave its TPM, and encrypts a random secret
   to the EK for the AK's name;
3. the box returns the secret (``callveil attest activate``), which its TPM releases only if
   that EK and that AK live in it;
4. ``enrol`` compares it and writes the AK's public key, now trusted for this box.

Then, whenever the team asks: ``callveil attest quote --nonce N`` on the box and ``quote`` here,
which checks the AK's signature, the nonce (so an old quote cannot be replayed), the quoted PCR
digest against the reported values, and the release PCR against the approved measurements.
Boot PCRs (0-7) are reported, not judged: their reference values depend on the firmware.

The release measurement combines component digests: the callveil package, the site's
configuration file and each configured model. A vendor signs a release manifest (Ed25519)
listing the package and model digests; the team adds the digest of the configuration it
deployed (``--config FILE``) and gets the measurement the box must show. The box computes its
measurement with the functions below, so there is one definition of what is measured.

Needs only Python 3.11+ and ``cryptography``; copy this file and run ``python3 attestation.py``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.kbkdf import KBKDFHMAC, CounterLocation, Mode

try:  # CFB moved to the "decrepit" module in cryptography 47; TPMs still use it
    from cryptography.hazmat.decrepit.ciphers.modes import CFB
except ImportError:  # cryptography before 47
    from cryptography.hazmat.primitives.ciphers.modes import CFB

ENROLMENT_FORMAT = "callveil-enrolment/1"
CHALLENGE_FORMAT = "callveil-challenge/1"
QUOTE_FORMAT = "callveil-quote/1"
MANIFEST_FORMAT = "callveil-release-manifest/1"
RELEASE_PCR = 23
BOOT_PCRS = tuple(range(8))

_GENERATED = 0xFF544347  # TPM_GENERATED_VALUE: the TPM made this structure
_ST_ATTEST_QUOTE = 0x8018
_ALG_RSA, _ALG_ECC, _ALG_SHA256, _ALG_NULL, _ALG_AES, _ALG_CFB = (
    0x0001, 0x0023, 0x000B, 0x0010, 0x0006, 0x0043,
)  # fmt: skip
_CURVES = {0x0003: ec.SECP256R1(), 0x0004: ec.SECP384R1()}
_FIXED_TPM, _FIXED_PARENT, _SENSITIVE_ORIGIN = 1 << 1, 1 << 4, 1 << 5
_ADMIN_WITH_POLICY, _RESTRICTED, _DECRYPT, _SIGN = 1 << 7, 1 << 16, 1 << 17, 1 << 18
_AK_REQUIRED = _FIXED_TPM | _FIXED_PARENT | _SENSITIVE_ORIGIN | _RESTRICTED | _SIGN
_EK_REQUIRED = (
    _FIXED_TPM | _FIXED_PARENT | _SENSITIVE_ORIGIN | _ADMIN_WITH_POLICY | _RESTRICTED | _DECRYPT
)
_SECRET_BYTES = 32
_DIGEST_BYTES = 32
_MEASUREMENT_DOMAIN = b"callveil release measurement v2\n"
_COMPONENT_DOMAIN = b"callveil measured component v1\n"
_MANIFEST_DOMAIN = b"callveil release manifest v1\n"
# Written by the interpreter at run time: measuring them would change the digest on its own.
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


class AttestationError(Exception):
    """The evidence does not prove what it claims; the message says which check failed."""


# -- TPM structures ---------------------------------------------------------------------------


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data, self._pos, self._what = data, 0, what

    def take(self, size: int) -> bytes:
        if self._pos + size > len(self._data):
            raise AttestationError(f"the {self._what} is truncated")
        chunk = self._data[self._pos : self._pos + size]
        self._pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def sized(self) -> bytes:
        return self.take(self.u16())

    def end(self) -> None:
        if self._pos != len(self._data):
            raise AttestationError(
                f"the {self._what} has {len(self._data) - self._pos} extra bytes"
            )


@dataclass(frozen=True, slots=True)
class TpmPublic:
    """What a verifier needs of a TPM2B_PUBLIC: attributes, key, cipher and the TPM name."""

    attributes: int
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    symmetric: tuple[int, int, int]  # algorithm, key bits, mode
    name: bytes


def _scheme(reader: _Reader) -> None:
    if reader.u16() != _ALG_NULL:
        reader.u16()  # the scheme's hash; callveil's keys use no ECDAA (which adds a count)


def parse_public(blob: bytes, what: str) -> TpmPublic:
    """Parse a marshalled TPM2B_PUBLIC (RSA or ECC) and compute its name."""
    outer = _Reader(blob, what)
    area = outer.sized()
    outer.end()
    reader = _Reader(area, what)
    kind, name_alg, attributes = reader.u16(), reader.u16(), reader.u32()
    if name_alg != _ALG_SHA256:
        raise AttestationError(f"the {what} uses name algorithm {name_alg:#06x}, not SHA-256")
    reader.sized()  # auth policy
    algorithm = reader.u16()
    symmetric = (algorithm, *(reader.u16(), reader.u16())) if algorithm != _ALG_NULL else (0, 0, 0)
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if kind == _ALG_RSA:
        _scheme(reader)
        reader.u16()  # key bits: implied by the modulus
        exponent = reader.u32() or 65537
        key = rsa.RSAPublicNumbers(exponent, int.from_bytes(reader.sized(), "big")).public_key()
    elif kind == _ALG_ECC:
        _scheme(reader)
        curve = _CURVES.get(reader.u16())
        _scheme(reader)  # KDF
        x, y = int.from_bytes(reader.sized(), "big"), int.from_bytes(reader.sized(), "big")
        if curve is None:
            raise AttestationError(f"the {what} is on a curve this verifier does not know")
        try:
            key = ec.EllipticCurvePublicNumbers(x, y, curve).public_key()
        except ValueError:
            raise AttestationError(f"the {what} is not a point on its curve") from None
    else:
        raise AttestationError(f"the {what} is neither an RSA nor an ECC key (type {kind:#06x})")
    reader.end()
    name = struct.pack(">H", name_alg) + hashlib.sha256(area).digest()
    return TpmPublic(attributes, key, symmetric, name)


@dataclass(frozen=True, slots=True)
class QuoteInfo:
    nonce: bytes
    clock: int
    reset_count: int
    restart_count: int
    firmware: int
    pcrs: tuple[int, ...]  # SHA-256 bank, in the order the digest covers them
    pcr_digest: bytes


def parse_quote(attest: bytes) -> QuoteInfo:
    """Parse a TPMS_ATTEST of type quote."""
    reader = _Reader(attest, "quote")
    if reader.u32() != _GENERATED:
        raise AttestationError("the quote was not generated by a TPM (wrong magic value)")
    if reader.u16() != _ST_ATTEST_QUOTE:
        raise AttestationError("the signed structure is not a quote")
    reader.sized()  # qualified name of the signer
    nonce = reader.sized()
    clock, reset_count, restart_count = reader.u64(), reader.u32(), reader.u32()
    reader.u8()  # "safe" flag
    firmware = reader.u64()
    pcrs: list[int] = []
    for _ in range(reader.u32()):
        bank = reader.u16()
        bitmap = reader.take(reader.u8())
        selected = [i for i in range(8 * len(bitmap)) if bitmap[i // 8] >> (i % 8) & 1]
        if selected and bank != _ALG_SHA256:
            raise AttestationError(f"the quote covers PCR bank {bank:#06x}, not SHA-256")
        pcrs.extend(selected)
    digest = reader.sized()
    reader.end()
    return QuoteInfo(nonce, clock, reset_count, restart_count, firmware, tuple(pcrs), digest)


def extended_pcr(measurement: bytes) -> bytes:
    """A PCR's value after one SHA-256 extend with ``measurement`` from its reset value."""
    return hashlib.sha256(bytes(32) + measurement).digest()


# -- release measurement ----------------------------------------------------------------------


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _component_entries(root: Path) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(relative name, kind, digest) of ``root`` (a file) or every file and link below it."""
    if not root.is_dir():  # a link at the top (e.g. a "current" release link) is followed
        yield b"", b"f", _file_digest(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        base = Path(dirpath)
        for entry in (*dirnames, *filenames):
            path = base / entry
            name = path.relative_to(root).as_posix().encode()
            if path.is_symlink():
                # the link itself, not what it points to: retargeting a link changes the digest
                yield name, b"l", hashlib.sha256(os.fsencode(os.readlink(path))).digest()
            elif path.is_file() and not entry.endswith(_SKIP_SUFFIXES):
                yield name, b"f", _file_digest(path)


def component_digest(root: Path) -> bytes:
    """SHA-256 of a file, or of a tree's sorted listing (relative name, kind, content digest).

    Independent of directory order, timestamps and where the files live. Raises OSError when
    something cannot be read.
    """
    digest = hashlib.sha256(_COMPONENT_DOMAIN)
    for name, kind, content in sorted(_component_entries(root)):
        digest.update(struct.pack(">I", len(name)) + name + kind + content)
    return digest.digest()


def _hex_digest(value: object, what: str) -> bytes:
    try:
        digest = bytes.fromhex(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        digest = b""
    if len(digest) != _DIGEST_BYTES:
        raise AttestationError(f"{what} is not a SHA-256 digest in hex (64 hex digits)")
    return digest


@dataclass(frozen=True, slots=True)
class ReleaseComponents:
    """The component digests of a release as a box runs it; ``measurement`` combines them."""

    package: bytes
    config: bytes
    models: tuple[bytes, ...]  # in the order the box measures them

    def measurement(self) -> bytes:
        """The release measurement the box extends into its release PCR."""
        digest = hashlib.sha256(_MEASUREMENT_DOMAIN)
        labelled = [("package", self.package), ("config", self.config)]
        labelled += [(f"model{i}", model) for i, model in enumerate(self.models)]
        for label, value in labelled:
            if len(value) != _DIGEST_BYTES:
                raise ValueError(f"the {label} digest has {len(value)} bytes, not 32")
            digest.update(struct.pack(">I", len(label)) + label.encode() + value)
        return digest.digest()

    def document(self) -> dict[str, Any]:
        return {
            "package": self.package.hex(),
            "config": self.config.hex(),
            "models": [m.hex() for m in self.models],
        }

    @classmethod
    def from_document(cls, value: object) -> ReleaseComponents:
        if not isinstance(value, dict) or not isinstance(value.get("models"), list):
            raise AttestationError("the reported release components are malformed")
        return cls(
            _hex_digest(value.get("package"), "the reported package digest"),
            _hex_digest(value.get("config"), "the reported configuration digest"),
            tuple(_hex_digest(m, "a reported model digest") for m in value["models"]),
        )


# -- release manifests ------------------------------------------------------------------------


def manifest_signed_bytes(document: dict[str, Any]) -> bytes:
    """What the release key signs: the manifest without its signature, as canonical JSON."""
    body = {k: v for k, v in document.items() if k != "signature"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _MANIFEST_DOMAIN + canonical.encode()


def release_key_id(key: ed25519.Ed25519PublicKey) -> str:
    """A short name of a release key, written into the manifests it signs."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A release manifest whose signature by the release key was verified."""

    release: str
    package: bytes
    models: tuple[tuple[str, bytes], ...]  # (name, digest) in the order the box measures them

    def components(self, config: bytes) -> ReleaseComponents:
        """The release as a box runs it with the configuration whose digest is ``config``."""
        return ReleaseComponents(self.package, config, tuple(d for _, d in self.models))


def load_release_key(pem: bytes) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise AttestationError("the release key is not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AttestationError("the release key is not an Ed25519 public key")
    return key


def load_manifest(document: dict[str, Any], release_key: ed25519.Ed25519PublicKey) -> Manifest:
    """Check the manifest's signature by ``release_key``, then read it."""
    _expect_format(document, MANIFEST_FORMAT)
    signature = document.get("signature")
    if not isinstance(signature, dict):
        raise AttestationError("the manifest is not signed: sign it with the release key first")
    expected = release_key_id(release_key)
    if signature.get("key_id") != expected:
        raise AttestationError(
            f"the manifest was signed by another release key (key id {signature.get('key_id')}),"
            f" not by the given one (key id {expected})"
        )
    try:
        release_key.verify(_b64(signature, "ed25519"), manifest_signed_bytes(document))
    except InvalidSignature:
        raise AttestationError(
            "the manifest was altered after it was signed: its signature does not verify"
        ) from None
    release, models = document.get("release"), document.get("models")
    if not isinstance(release, str) or not release or not isinstance(models, list):
        raise AttestationError("the signed manifest lacks its release name or model list")
    listed = []
    for model in models:
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            raise AttestationError("a model in the manifest has no name")
        listed.append((model["name"], _hex_digest(model.get("digest"), "a model digest")))
    package = _hex_digest(document.get("package"), "the manifest's package digest")
    return Manifest(release, package, tuple(listed))


# -- enrolment --------------------------------------------------------------------------------


def check_ek_certificate(
    ek: TpmPublic, certificate: x509.Certificate, cas: list[x509.Certificate]
) -> str:
    """The subject of the CA that vouches for the EK; AttestationError if none does."""
    if not isinstance(ek.key, rsa.RSAPublicKey) or ek.attributes & _EK_REQUIRED != _EK_REQUIRED:
        raise AttestationError("the endorsement key is not a standard RSA storage EK")
    if certificate.public_key().public_numbers() != ek.key.public_numbers():
        raise AttestationError("the EK certificate certifies another key than the box's EK")
    now = dt.datetime.now(dt.UTC)
    chain, current = [], certificate
    for _ in range(8):
        issuer = next((ca for ca in cas if _issued_by(current, ca)), None)
        if issuer is None:
            raise AttestationError(
                f"no given CA certificate issued {current.subject.rfc4514_string()!r}; pass the "
                "TPM maker's root and intermediate certificates with --ek-ca"
            )
        if not issuer.not_valid_before_utc <= now <= issuer.not_valid_after_utc:
            raise AttestationError(f"CA {issuer.subject.rfc4514_string()!r} is not valid today")
        chain.append(issuer)
        if _issued_by(issuer, issuer):
            return chain[0].subject.rfc4514_string()
        current = issuer
    raise AttestationError("the EK certificate chain is longer than 8 certificates")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _kdfa(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    # TPM KDFa: SP 800-108 counter mode with HMAC-SHA-256, label NUL-terminated by KBKDF
    return KBKDFHMAC(
        algorithm=hashes.SHA256(),
        mode=Mode.CounterMode,
        length=bits // 8,
        rlen=4,
        llen=4,
        location=CounterLocation.BeforeFixed,
        label=label,
        context=context,
        fixed=None,
    ).derive(key)


def _sized(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def make_credential(ek: TpmPublic, ak_name: bytes, secret: bytes) -> tuple[bytes, bytes]:
    """TPM2_MakeCredential in software: (TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET)."""
    if not isinstance(ek.key, rsa.RSAPublicKey) or ek.symmetric[::2] != (_ALG_AES, _ALG_CFB):
        raise AttestationError("the EK must be an RSA key with AES-CFB protection")
    seed = os.urandom(32)
    label = b"IDENTITY\x00"
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label)
    encrypted_seed = ek.key.encrypt(seed, oaep)
    sym_key = _kdfa(seed, b"STORAGE", ak_name, ek.symmetric[1])
    encryptor = Cipher(algorithms.AES(sym_key), CFB(bytes(16))).encryptor()
    identity = encryptor.update(_sized(secret)) + encryptor.finalize()
    hmac_key = _kdfa(seed, b"INTEGRITY", b"", 256)
    outer = hmac.new(hmac_key, identity + ak_name, hashlib.sha256).digest()
    return _sized(_sized(outer) + identity), _sized(encrypted_seed)


def challenge(enrolment: dict[str, Any], cas: list[x509.Certificate]) -> tuple[dict, dict]:
    """Check an enrolment; return (challenge for the box, state the verifier keeps secret)."""
    _expect_format(enrolment, ENROLMENT_FORMAT)
    ek = parse_public(_b64(enrolment, "ek_public"), "endorsement key")
    ak_blob = _b64(enrolment, "ak_public")
    ak = parse_public(ak_blob, "attestation key")
    if (
        not isinstance(ak.key, ec.EllipticCurvePublicKey)
        or ak.attributes & (_AK_REQUIRED | _DECRYPT) != _AK_REQUIRED
    ):
        raise AttestationError("the attestation key is not a restricted, TPM-bound ECC signing key")
    if enrolment.get("ek_certificate") is None:
        raise AttestationError(
            "the TPM has no EK certificate, so nothing proves it is a genuine TPM; enrol such a "
            "box only in person, by comparing its AK on site"
        )
    try:
        certificate = x509.load_der_x509_certificate(_b64(enrolment, "ek_certificate"))
    except ValueError:
        raise AttestationError("the EK certificate is not a DER X.509 certificate") from None
    vouched_by = check_ek_certificate(ek, certificate, cas)
    secret = os.urandom(_SECRET_BYTES)
    credential, encrypted_secret = make_credential(ek, ak.name, secret)
    state = {
        "secret": secret.hex(),
        "ak_public": enrolment["ak_public"],
        "ek_ca": vouched_by,
    }
    box = {
        "format": CHALLENGE_FORMAT,
        "credential": base64.b64encode(credential).decode(),
        "secret": base64.b64encode(encrypted_secret).decode(),
    }
    return box, state


def enrol(state: dict[str, Any], response: str) -> bytes:
    """The AK's public key (PEM) once the box returned the challenge's secret."""
    try:
        answer = bytes.fromhex(response.strip())
    except ValueError:
        raise AttestationError("the box's response is not hex") from None
    if not hmac.compare_digest(answer, bytes.fromhex(state["secret"])):
        raise AttestationError(
            "the box did not recover the secret: its AK and EK are not in the same TPM"
        )
    ak = parse_public(_b64(state, "ak_public"), "attestation key")
    return ak.key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- quotes -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """A verified quote: which approved measurement the box runs, and what else it reported."""

    measurement: str
    pcrs: dict[int, str]
    reset_count: int
    restart_count: int
    release: str | None = None  # the manifest's release name, when checked against one


@dataclass(frozen=True, slots=True)
class _Quoted:
    values: dict[int, bytes]
    info: QuoteInfo

    def verdict(self, measurement: bytes, release: str | None = None) -> Verdict:
        return Verdict(
            measurement.hex(),
            {i: v.hex() for i, v in sorted(self.values.items())},
            self.info.reset_count,
            self.info.restart_count,
            release,
        )


def _checked_quote(
    document: dict[str, Any], nonce: bytes, ak_pem: bytes, release_pcr: int
) -> _Quoted:
    """The PCR values of a quote whose signature, nonce and PCR digest check out."""
    _expect_format(document, QUOTE_FORMAT)
    trusted = serialization.load_pem_public_key(ak_pem)
    ak = parse_public(_b64(document, "ak_public"), "attestation key")
    if not isinstance(trusted, ec.EllipticCurvePublicKey) or trusted.public_numbers() != (
        ak.key.public_numbers()
    ):
        raise AttestationError("the quote was signed by another key than this box's enrolled AK")
    attest = _b64(document, "quote")
    try:
        trusted.verify(_b64(document, "signature"), attest, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AttestationError("the quote's signature does not verify: it was altered") from None
    info = parse_quote(attest)
    if not hmac.compare_digest(info.nonce, nonce):
        raise AttestationError(
            "the quote answers another nonce: it is a replay or an answer to another request"
        )
    reported = document.get("pcrs")
    if not isinstance(reported, dict):
        raise AttestationError("the document has no PCR values")
    try:
        values = {int(k): bytes.fromhex(v) for k, v in reported.items()}
    except (TypeError, ValueError):
        raise AttestationError("the PCR values are not hex digests") from None
    if set(values) != set(info.pcrs) or any(len(v) != 32 for v in values.values()):
        raise AttestationError("the reported PCRs are not those the quote covers")
    digest = hashlib.sha256(b"".join(values[i] for i in info.pcrs)).digest()
    if not hmac.compare_digest(digest, info.pcr_digest):
        raise AttestationError(
            "the reported PCR values do not match the quoted digest (altered, or a PCR changed "
            "during the quote: ask again)"
        )
    if release_pcr not in values:
        raise AttestationError(f"the quote does not cover the release PCR {release_pcr}")
    return _Quoted(values, info)


def verify_quote(
    document: dict[str, Any],
    *,
    nonce: bytes,
    ak_pem: bytes,
    approved: list[bytes],
    release_pcr: int = RELEASE_PCR,
) -> Verdict:
    """Check a quote document against the nonce sent, the enrolled AK and approved releases."""
    quoted = _checked_quote(document, nonce, ak_pem, release_pcr)
    measured = quoted.values[release_pcr]
    match = next((m for m in approved if hmac.compare_digest(extended_pcr(m), measured)), None)
    if match is None:
        raise AttestationError(
            f"PCR {release_pcr} ({measured.hex()}) matches no approved release measurement: "
            "the box runs another release, configuration or model set"
        )
    return quoted.verdict(match)


def verify_release_quote(
    document: dict[str, Any],
    *,
    nonce: bytes,
    ak_pem: bytes,
    manifest: Manifest,
    config: bytes,
    release_pcr: int = RELEASE_PCR,
) -> Verdict:
    """Check a quote against a verified release manifest and the site configuration's digest.

    A quote that also reports the box's component digests (bound to the quote: they must
    combine into the quoted PCR value) gets a verdict naming the component that differs.
    """
    quoted = _checked_quote(document, nonce, ak_pem, release_pcr)
    measured = quoted.values[release_pcr]
    expected = manifest.components(config)
    if hmac.compare_digest(extended_pcr(expected.measurement()), measured):
        return quoted.verdict(expected.measurement(), manifest.release)
    if "components" not in document:
        raise AttestationError(
            f"PCR {release_pcr} ({measured.hex()}) is not release {manifest.release} with "
            f"configuration {config.hex()[:16]}...: the box runs another package, "
            "configuration or model set"
        )
    box = ReleaseComponents.from_document(document["components"])
    if not hmac.compare_digest(extended_pcr(box.measurement()), measured):
        raise AttestationError(
            f"the reported release components do not give PCR {release_pcr}: they were altered"
        )
    raise AttestationError(_difference(box, expected, manifest))


def _difference(box: ReleaseComponents, expected: ReleaseComponents, manifest: Manifest) -> str:
    """Which component of the box's release differs from the expected one."""
    release = manifest.release
    if box.package != expected.package:
        return (
            f"the box runs another callveil package ({box.package.hex()[:16]}...) than release "
            f"{release} ({expected.package.hex()[:16]}...): another release, or changed files"
        )
    if box.config != expected.config:
        return (
            f"the box's configuration file ({box.config.hex()[:16]}...) is not the one given "
            f"({expected.config.hex()[:16]}...): compare it with the file deployed"
        )
    if len(box.models) != len(expected.models):
        return (
            f"the box measures {len(box.models)} model(s), release {release} ships "
            f"{len(expected.models)}: its configured models are not those of the release"
        )
    index = next(i for i, model in enumerate(box.models) if model != expected.models[i])
    return (
        f"model {index} ({manifest.models[index][0]}) on the box "
        f"({box.models[index].hex()[:16]}...) is not release {release}'s "
        f"({expected.models[index].hex()[:16]}...): the model files were changed or replaced"
    )


# -- files and command line -------------------------------------------------------------------


def _b64(document: dict[str, Any], key: str) -> bytes:
    value = document.get(key)
    try:
        return base64.b64decode(value, validate=True)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AttestationError(f"field {key!r} is missing or not base64") from None


def _expect_format(document: object, expected: str) -> None:
    if not isinstance(document, dict) or document.get("format") != expected:
        raise AttestationError(f"not a {expected} document")


def _read_json(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AttestationError(f"cannot read {path}: {exc}") from None


def _write(path: str, data: bytes, *, private: bool = False) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    with os.fdopen(os.open(path, flags, 0o600 if private else 0o644), "wb") as f:
        f.write(data)


def _load_cas(paths: list[str]) -> list[x509.Certificate]:
    cas = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
            cas.extend(
                x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise AttestationError(f"cannot read CA certificate {path}: {exc}") from None
    return cas


def _measurements(values: list[str]) -> list[bytes]:
    try:
        approved = [bytes.fromhex(v) for v in values]
    except ValueError:
        raise AttestationError("an approved measurement is not hex") from None
    if not approved or any(len(m) != 32 for m in approved):
        raise AttestationError("give each approved release measurement as 64 hex digits")
    return approved


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="verify-attestation", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="step", required=True)
    chal = sub.add_parser("challenge", help="check a box's enrolment and make its challenge")
    chal.add_argument("enrolment", help="output of 'callveil attest enrolment'")
    chal.add_argument("--ek-ca", action="append", required=True, help="TPM maker CA cert(s)")
    chal.add_argument("--challenge-out", required=True, help="file to hand to the box")
    chal.add_argument("--state-out", required=True, help="file the verifier keeps (secret)")
    enr = sub.add_parser("enrol", help="accept the box's answer; write its trusted AK")
    enr.add_argument("state", help="the --state-out file of 'challenge'")
    enr.add_argument("--response", required=True, help="hex printed by 'callveil attest activate'")
    enr.add_argument("--ak-out", required=True, help="where to write the trusted AK (PEM)")
    quote = sub.add_parser("quote", help="verify a quote from an enrolled box")
    quote.add_argument("document", help="output of 'callveil attest quote'")
    quote.add_argument("--nonce", required=True, help="the hex nonce you sent to the box")
    quote.add_argument("--ak", required=True, help="the box's trusted AK (from 'enrol')")
    against = quote.add_mutually_exclusive_group(required=True)
    against.add_argument("--approved", action="append", help="approved release measurement (hex)")
    against.add_argument("--manifest", help="signed release manifest (needs --release-key)")
    _release_arguments(quote, required=False)
    quote.add_argument("--release-pcr", type=int, default=RELEASE_PCR)
    expect = sub.add_parser(
        "expect", help="print the release measurement a box must show (e.g. to re-seal)"
    )
    expect.add_argument("--manifest", required=True, help="signed release manifest")
    _release_arguments(expect, required=True)
    return parser


def _release_arguments(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--release-key", required=required, help="release public key (PEM)")
    config = parser.add_mutually_exclusive_group(required=required)
    config.add_argument("--config", help="the configuration file deployed on the box")
    config.add_argument("--config-digest", help="its digest (hex), as --config computes it")


def _manifest_and_config(args: argparse.Namespace) -> tuple[Manifest, bytes]:
    if not args.release_key or not (args.config or args.config_digest):
        raise ValueError("--manifest needs --release-key and either --config or --config-digest")
    key = load_release_key(Path(args.release_key).read_bytes())
    manifest = load_manifest(_read_json(args.manifest), key)
    if args.config:
        return manifest, component_digest(Path(args.config))
    config = bytes.fromhex(args.config_digest)
    if len(config) != _DIGEST_BYTES:
        raise ValueError("--config-digest must be a SHA-256 digest: 64 hex digits")
    return manifest, config


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.step == "challenge":
            box, state = challenge(_read_json(args.enrolment), _load_cas(args.ek_ca))
            _write(args.state_out, json.dumps(state).encode(), private=True)
            _write(args.challenge_out, json.dumps(box, indent=1).encode())
            print(f"EK certificate vouched for by {state['ek_ca']}; hand the challenge to the box")
        elif args.step == "enrol":
            _write(args.ak_out, enrol(_read_json(args.state), args.response))
            print(f"box enrolled: its attestation key is in {args.ak_out}")
        elif args.step == "expect":
            manifest, config = _manifest_and_config(args)
            measurement = manifest.components(config).measurement()
            print(f"release {manifest.release}: measurement {measurement.hex()}")
            print(f"release PCR value {extended_pcr(measurement).hex()}")
        else:
            quote = {
                "document": _read_json(args.document),
                "nonce": bytes.fromhex(args.nonce),
                "ak_pem": Path(args.ak).read_bytes(),
                "release_pcr": args.release_pcr,
            }
            if args.manifest:
                manifest, config = _manifest_and_config(args)
                verdict = verify_release_quote(**quote, manifest=manifest, config=config)
                print(f"OK: the box runs release {verdict.release}: {verdict.measurement}")
            else:
                verdict = verify_quote(**quote, approved=_measurements(args.approved))
                print(f"OK: the box runs the approved release measurement {verdict.measurement}")
            print(f"TPM resets {verdict.reset_count}, restarts {verdict.restart_count}")
            for index, value in verdict.pcrs.items():
                print(f"PCR {index:2d} {value}")
    except AttestationError as exc:
        print(f"verify-attestation: FAILED: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"verify-attestation: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
