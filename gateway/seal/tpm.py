"""Keys held by the TPM: the vault KEK sealed to the measured release, and two signing keys.

Under the storage primary key (re-derived from the TPM's seed at every start) live three
objects, kept on disk as TPM-encrypted blobs (useless without this TPM):

- ``kek.tpm``: a sealed data object holding the 32-byte KEK, released only through a policy
  session whose PolicyPCR matches the release PCR after one extend with the approved
  release measurement (PCR value ``SHA-256(0^32 || measurement)``);
- ``kek-<16 hex>.tpm``: the same KEK sealed to the measurement of an approved update, named
  after the start of the PCR value it opens under. It sits beside ``kek.tpm`` until the
  update is confirmed (``prune``), so the box can still go back to the release before it;
- ``ak.tpm``: a restricted ECC P-256 signing key for attestation quotes;
- ``signer.tpm``: an unrestricted ECC P-256 key that signs published data.

For attestation the provider also quotes PCRs with the AK, and proves the AK lives in the same
TPM as the endorsement key (EK) by activating a credential that a verifier made for the AK's
name under the EK (TCG credential activation); the EK is re-derived from the endorsement seed
each time and its certificate read from the TPM's NV storage.

The KEK is unsealed over a session salted with the primary key and with response
encryption, so it never crosses the TPM bus in clear. Objects are loaded only for the
command that needs them and flushed right after: a TPM without a resource manager (and the
swtpm simulator) holds just three of them and keeps them across connections.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss import ESAPI, TSS2_Exception
from tpm2_pytss.constants import (
    ESYS_TR,
    TPM2_ALG,
    TPM2_CAP,
    TPM2_HT,
    TPM2_RC,
    TPM2_RH,
    TPM2_SE,
    TPM2_ST,
    TPMA_OBJECT,
    TPMA_SESSION,
)
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_ENCRYPTED_SECRET,
    TPM2B_ID_OBJECT,
    TPM2B_PRIVATE,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPM2B_SENSITIVE_DATA,
    TPML_DIGEST_VALUES,
    TPML_PCR_SELECTION,
    TPMS_SENSITIVE_CREATE,
    TPMT_HA,
    TPMT_PUBLIC,
    TPMT_SIG_SCHEME,
    TPMT_SYM_DEF,
    TPMT_TK_HASHCHECK,
    TPMU_HA,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)
from tpm2_pytss.utils import NVReadEK, create_ek_template

from gateway.closing import Closing
from gateway.seal.keyprovider import KEK_BYTES, SealError
from gateway.seal.privatefile import read_private, sync_directory, write_private

# PCRs that start every boot at zero, that locality 0 may extend, and that firmware and
# boot loader leave alone: 23 is the application PCR, 16 the debug PCR (tests).
RELEASE_PCRS = (16, 23)
_DIGEST_BYTES = 32
_BASE_ATTRS = (
    TPMA_OBJECT.FIXEDTPM
    | TPMA_OBJECT.FIXEDPARENT
    | TPMA_OBJECT.SENSITIVEDATAORIGIN
    | TPMA_OBJECT.USERWITHAUTH
)
_PRIMARY_TEMPLATE = TPM2B_PUBLIC.parse(
    "ecc256:aes128cfb", objectAttributes=TPMA_OBJECT.DEFAULT_TPM2_TOOLS_CREATEPRIMARY_ATTRS
)
_SIGNER_TEMPLATE = TPM2B_PUBLIC.parse(
    "ecc256:ecdsa-sha256:null", objectAttributes=_BASE_ATTRS | TPMA_OBJECT.SIGN_ENCRYPT
)
_AK_TEMPLATE = TPM2B_PUBLIC.parse(
    "ecc256:ecdsa-sha256:null",
    objectAttributes=_BASE_ATTRS | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.RESTRICTED,
)
_NO_SYM = TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL)
_AES128_CFB = TPMT_SYM_DEF(
    algorithm=TPM2_ALG.AES,
    keyBits=TPMU_SYM_KEY_BITS(aes=128),
    mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB),
)


_KEK = "kek"
# Hex digits of the PCR value in an approval's file name: enough to never collide in practice;
# the blob's own policy, not its name, decides whether it opens.
_APPROVAL_HEX = 16

# TPM2B_DATA holds at most a TPMT_HA (2 + 64 bytes); fewer than 8 bytes would be guessable.
NONCE_BYTES = (8, 64)


@dataclass(frozen=True, slots=True)
class Quote:
    """A TPM quote: the signed TPMS_ATTEST, its DER signature and the quoted PCR values."""

    attest: bytes
    signature: bytes
    pcrs: dict[int, bytes]


def extended_pcr(measurement: bytes) -> bytes:
    """The value of a PCR reset to zero and then extended once with ``measurement``."""
    return hashlib.sha256(bytes(_DIGEST_BYTES) + measurement).digest()


def _check_digest(measurement: bytes) -> None:
    if len(measurement) != _DIGEST_BYTES:
        raise SealError(f"a release measurement is a SHA-256 digest, got {len(measurement)} bytes")


@contextlib.contextmanager
def _tpm_errors(what: str) -> Iterator[None]:
    """Turn a TPM failure while doing ``what`` into a SealError that names it."""
    try:
        yield
    except TSS2_Exception as exc:
        raise SealError(f"the TPM failed {what}: {exc}") from None


def _connect(tcti: str) -> ESAPI:
    try:
        return ESAPI(tcti)
    except TSS2_Exception as exc:
        raise SealError(
            f"no TPM reachable through {tcti!r} ({exc}): check that the TPM is enabled in "
            "firmware, that /dev/tpmrm0 exists and the service user may open it (group tss), "
            "or that the configured TCTI points at a running TPM; a box without a TPM must be "
            "configured explicitly for the software key provider. Nothing will be stored."
        ) from None


class TpmKeyProvider(Closing):
    """The KEK and signing keys of a TPM, bound to the measured release."""

    name = "tpm"

    def __init__(
        self,
        tcti: str,
        state_dir: Path,
        *,
        measurement: bytes,
        pcr: int = 23,
        create: bool = True,
    ) -> None:
        """Connect, extend ``pcr`` with ``measurement`` and load or create the keys.

        On first start the KEK is sealed to ``measurement`` (unless ``create`` is false: then
        a directory without keys is an error); later starts only check that the stored keys
        belong to this TPM. ``tcti`` is a TSS2 TCTI string such as ``device:/dev/tpmrm0`` or
        ``swtpm:host=127.0.0.1,port=2321``.
        """
        if pcr not in RELEASE_PCRS:
            raise SealError(f"PCR {pcr} cannot hold the release measurement; use 23 (or 16)")
        _check_digest(measurement)
        if not create and not (state_dir / f"{_KEK}.tpm").exists():
            raise SealError(
                f"no vault key is sealed in {state_dir} yet: the daemon seals one to the release "
                "it runs at its first start, so there is nothing to re-seal or prune; check "
                "keys.state_dir if the box has run before"
            )
        self._state = state_dir
        self._pcr = pcr
        self._pcr_handle = getattr(ESYS_TR, f"PCR{pcr}")
        self._selection = TPML_PCR_SELECTION.parse(f"sha256:{pcr}")
        self._lock = threading.Lock()
        self._primary: ESYS_TR | None = None
        self._ectx: ESAPI | None = _connect(tcti)
        try:
            self._flush_leftovers()
            self._primary, primary_public = self._tpm.create_primary(
                TPM2B_SENSITIVE_CREATE(), _PRIMARY_TEMPLATE
            )[:2]
            self._check_primary(primary_public)
            self.extend_measurement(measurement)
            if not self._path(_KEK).exists():
                self._create_keys(measurement)
        except TSS2_Exception as exc:
            self.close()
            raise SealError(f"the TPM at {tcti!r} failed while opening the keys: {exc}") from None
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Flush the primary key and close the connection; safe to call twice."""
        ectx, self._ectx = self._ectx, None
        if ectx is None:
            return
        # a connection that already failed cannot flush; the next start flushes leftovers
        with contextlib.suppress(TSS2_Exception):
            if self._primary is not None:
                ectx.flush_context(self._primary)
        ectx.close()

    @property
    def _tpm(self) -> ESAPI:
        if self._ectx is None:
            raise SealError("the TPM key provider is closed")
        return self._ectx

    # -- measurement ------------------------------------------------------------------------

    def extend_measurement(self, measurement: bytes) -> bool:
        """Record ``measurement`` in the release PCR once per boot; True if it extended.

        A PCR already holding exactly this measurement (the daemon restarted without a reboot)
        is left alone; one holding anything else means another release or program used it
        since boot, which cannot be undone without a reboot.
        """
        _check_digest(measurement)
        with self._lock:
            _, _, values = self._tpm.pcr_read(self._selection)
            current = bytes(values.digests[0])
            if current == extended_pcr(measurement):
                return False
            if current != bytes(_DIGEST_BYTES):
                raise SealError(
                    f"PCR {self._pcr} already holds another measurement ({current.hex()[:16]}...):"
                    " a different release or another program extended it since boot; reboot "
                    "and start only the approved release"
                )
            digest = TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=measurement))
            self._tpm.pcr_extend(self._pcr_handle, TPML_DIGEST_VALUES([digest]))
            return True

    # -- key provider -----------------------------------------------------------------------

    def unwrap_kek(self) -> bytes:
        """Unseal the KEK; SealError if the box's measured release is not an approved one."""
        with self._lock, _tpm_errors("while opening the vault key"):
            name = self._blob_for(self._read_pcr(self._pcr))
            if name is None:
                raise SealError(self._mismatch("the TPM will not release the vault key"))
            return self._unseal(name)

    def reseal(self, measurement: bytes) -> bool:
        """Seal the KEK to ``measurement`` too, for the next boot of an approved update.

        Only a box that can unseal now (an approved release is measured) can approve another.
        The blobs of the releases approved so far stay, so the box can still boot back into
        them until ``prune``. False when ``measurement`` was approved already.
        """
        _check_digest(measurement)
        target = extended_pcr(measurement)
        failed = "to seal the vault key to the new release (nothing changed)"
        with self._lock, _tpm_errors(failed):
            name = self._blob_for(self._read_pcr(self._pcr))
            if name is None:
                raise SealError(
                    self._mismatch("cannot approve another release")
                    + "; only a box that runs an approved release can approve the next"
                )
            kek = self._unseal(name)
            if self._blob_for(target) is not None:
                return False
            self._seal_kek(kek, measurement, f"{_KEK}-{target.hex()[:_APPROVAL_HEX]}")
        return True

    def prune(self, keep: Iterable[bytes] = ()) -> int:
        """Forget every approved release but the running one and the ``keep`` measurements.

        Run once an update has proved itself (or after going back from a failed one): the
        releases dropped can no longer open the vault. Nothing is removed unless the running
        release opens the vault now. Returns how many sealed copies of the KEK were removed.
        """
        for measurement in keep:
            _check_digest(measurement)
        with self._lock, _tpm_errors("while pruning (nothing was removed)"):
            current = self._blob_for(self._read_pcr(self._pcr))
            if current is None:
                raise SealError(
                    self._mismatch("cannot prune")
                    + "; nothing was removed. Prune with the release that opens the vault"
                )
            self._unseal(current)
            kept = {current} | {
                name
                for measurement in keep
                if (name := self._blob_for(extended_pcr(measurement))) is not None
            }
            removed = 0
            if _KEK not in kept:
                # the running release's copy becomes the main one, in one atomic step
                os.replace(self._path(current), self._path(_KEK))
                kept = (kept - {current}) | {_KEK}
                removed += 1
            for path in self._state.glob(f"{_KEK}-*.tpm"):
                if path.name.removesuffix(".tpm") not in kept:
                    path.unlink()
                    removed += 1
            sync_directory(self._state)
        return removed

    def sign(self, data: bytes) -> bytes:
        """DER ECDSA P-256/SHA-256 signature of ``data`` by the publishing key."""
        digest = TPM2B_DIGEST(hashlib.sha256(data).digest())
        # an unrestricted key accepts the digest of data the TPM did not hash itself
        ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        with self._lock:
            handle = self._load("signer", self._read_object("signer"))
            try:
                sig = self._tpm.sign(handle, digest, TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL), ticket)
            except TSS2_Exception as exc:
                raise SealError(f"the TPM failed to sign: {exc}") from None
            finally:
                self._tpm.flush_context(handle)
        return encode_dss_signature(
            int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"),
        )

    def public_key_pem(self) -> bytes:
        return self._read_object("signer")[0].to_pem()

    def attestation_public_key_pem(self) -> bytes:
        """The public half of the restricted key that will sign attestation quotes."""
        return self._read_object("ak")[0].to_pem()

    # -- attestation ------------------------------------------------------------------------

    def attestation_public(self) -> bytes:
        """The AK's marshalled TPM2B_PUBLIC: verifiers derive its name and key from it."""
        return self._read_object("ak")[0].marshal()

    def quote(self, nonce: bytes, pcrs: Sequence[int]) -> Quote:
        """Quote the SHA-256 bank's ``pcrs`` with the AK, qualified by the verifier's ``nonce``."""
        if not NONCE_BYTES[0] <= len(nonce) <= NONCE_BYTES[1]:
            raise SealError(
                f"the nonce has {len(nonce)} bytes; give {NONCE_BYTES[0]} to {NONCE_BYTES[1]} "
                "random bytes chosen by the verifier"
            )
        indices = sorted(set(pcrs))
        if not indices or not all(0 <= i <= 23 for i in indices):
            raise SealError(f"cannot quote PCRs {pcrs}: give PCR numbers from 0 to 23")
        selection = TPML_PCR_SELECTION.parse("sha256:" + ",".join(map(str, indices)))
        with self._lock:
            handle = self._load("ak", self._read_object("ak"))
            try:
                attest, signature = self._tpm.quote(handle, selection, TPM2B_DATA(nonce))
                # read after quoting; a PCR extended in between makes the verifier's digest
                # check fail, and the verifier simply asks again
                values = {i: self._read_pcr(i) for i in indices}
            except TSS2_Exception as exc:
                raise SealError(f"the TPM failed to quote: {exc}") from None
            finally:
                self._tpm.flush_context(handle)
        der = encode_dss_signature(
            int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big"),
            int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big"),
        )
        return Quote(bytes(attest), der, values)

    def endorsement(self) -> tuple[bytes, bytes | None]:
        """The RSA 2048 EK's marshalled TPM2B_PUBLIC and its DER certificate, if the TPM has one."""
        with self._lock:
            try:
                certificate, handle, public = self._endorsement_key()
            except TSS2_Exception as exc:
                raise SealError(f"the TPM failed to derive its endorsement key: {exc}") from None
            self._tpm.flush_context(handle)
        return public.marshal(), certificate

    def activate_credential(self, credential: bytes, secret: bytes) -> bytes:
        """The secret a verifier encrypted to this TPM's EK for the AK's name (enrolment proof).

        The TPM releases it only if the EK is its own and an object with exactly that name (our
        AK, which never leaves this TPM) is loaded.
        """
        try:
            id_object = _unmarshal_exact(TPM2B_ID_OBJECT, credential)
            encrypted = _unmarshal_exact(TPM2B_ENCRYPTED_SECRET, secret)
        except (TSS2_Exception, ValueError):
            raise SealError("the challenge is damaged: not a TPM credential and secret") from None
        with self._lock:
            ak = self._load("ak", self._read_object("ak"))
            ek = session = None
            try:
                _, ek, _ = self._endorsement_key()
                session = self._tpm.start_auth_session(
                    ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.POLICY, _NO_SYM, TPM2_ALG.SHA256
                )
                # the EK's standard policy: PolicySecret on the endorsement hierarchy
                self._tpm.policy_secret(ESYS_TR.ENDORSEMENT, session)
                released = self._tpm.activate_credential(
                    ak, ek, id_object, encrypted, session2=session
                )
            except TSS2_Exception as exc:
                raise SealError(
                    f"the TPM refused the credential ({exc}): the challenge was made for "
                    "another TPM's endorsement key or another attestation key"
                ) from None
            finally:
                for handle in (session, ek, ak):
                    if handle is not None:
                        self._tpm.flush_context(handle)
        return bytes(released)

    # -- internals --------------------------------------------------------------------------

    def _read_pcr(self, index: int) -> bytes:
        _, _, values = self._tpm.pcr_read(TPML_PCR_SELECTION.parse(f"sha256:{index}"))
        return bytes(values.digests[0])

    def _endorsement_key(self) -> tuple[bytes | None, ESYS_TR, TPM2B_PUBLIC]:
        certificate, template = create_ek_template("EK-RSA2048", NVReadEK(self._tpm))
        handle, public = self._tpm.create_primary(
            TPM2B_SENSITIVE_CREATE(), template, primary_handle=ESYS_TR.ENDORSEMENT
        )[:2]
        return certificate, handle, public

    def _path(self, name: str) -> Path:
        return self._state / f"{name}.tpm"

    def _flush_leftovers(self) -> None:
        # A crashed earlier run may have left objects or sessions in a TPM without a resource
        # manager; with /dev/tpmrm0 this finds nothing.
        for kind in (TPM2_HT.TRANSIENT, TPM2_HT.LOADED_SESSION):
            _, data = self._tpm.get_capability(TPM2_CAP.HANDLES, kind << 24, 64)
            for handle in data.data.handles:
                self._tpm.flush_context(self._tpm.tr_from_tpmpublic(handle))

    def _check_primary(self, public: TPM2B_PUBLIC) -> None:
        path = self._state / "primary.pub"
        if not path.exists():
            write_private(path, public.marshal())
        elif bytes(public.get_name()) != bytes(self._unmarshal(path, TPM2B_PUBLIC)[0].get_name()):
            raise SealError(
                f"this TPM's storage key differs from the one that created {self._state}: the "
                "TPM was cleared or replaced, or the directory comes from another box; its keys "
                "and the vault they protect cannot be opened here"
            )

    def _create_keys(self, measurement: bytes) -> None:
        for name, template in (("signer", _SIGNER_TEMPLATE), ("ak", _AK_TEMPLATE)):
            private, public = self._tpm.create(self._primary, None, template)[:2]
            write_private(self._path(name), public.marshal() + private.marshal())
        # written last: its presence marks the key set complete
        self._seal_kek(os.urandom(KEK_BYTES), measurement)

    def _policy(self, pcr_value: bytes) -> bytes:
        """The policy digest of PolicyPCR on the release PCR holding ``pcr_value``."""
        # A trial session given the PCR digest computes the policy for that value, whatever the
        # PCR holds now: the KEK is sealed to the approved measurement, not to the present state.
        trial = self._tpm.start_auth_session(
            ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, _NO_SYM, TPM2_ALG.SHA256
        )
        try:
            digest = TPM2B_DIGEST(hashlib.sha256(pcr_value).digest())
            self._tpm.policy_pcr(trial, digest, self._selection)
            return bytes(self._tpm.policy_get_digest(trial))
        finally:
            self._tpm.flush_context(trial)

    def _seal_kek(self, kek: bytes, measurement: bytes, name: str = _KEK) -> None:
        template = TPM2B_PUBLIC(
            TPMT_PUBLIC(
                type=TPM2_ALG.KEYEDHASH,
                nameAlg=TPM2_ALG.SHA256,
                # no USERWITHAUTH: the policy is the only way to unseal
                objectAttributes=TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT,
                authPolicy=TPM2B_DIGEST(self._policy(extended_pcr(measurement))),
            )
        )
        template.publicArea.parameters.keyedHashDetail.scheme.scheme = TPM2_ALG.NULL
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(data=TPM2B_SENSITIVE_DATA(kek)))
        # the KEK goes to the TPM as the command's first parameter, encrypted under a session
        # salted with the primary key, as it comes back when unsealed
        session = self._tpm.start_auth_session(
            self._primary, ESYS_TR.NONE, TPM2_SE.HMAC, _AES128_CFB, TPM2_ALG.SHA256
        )
        try:
            self._tpm.trsess_set_attributes(
                session, TPMA_SESSION.DECRYPT | TPMA_SESSION.CONTINUESESSION
            )
            private, public = self._tpm.create(
                self._primary, sensitive, template, session1=session
            )[:2]
        finally:
            self._tpm.flush_context(session)
        write_private(
            self._path(name), public.marshal() + private.marshal() + self._selection.marshal()
        )

    def _blob_for(self, pcr_value: bytes) -> str | None:
        """The sealed KEK (``kek`` or an approval) that opens when the release PCR holds
        ``pcr_value``, found by comparing the policy it needs with each candidate's policy
        rather than by asking the TPM to try them."""
        policy = self._policy(pcr_value)
        approval = f"{_KEK}-{pcr_value.hex()[:_APPROVAL_HEX]}"
        # the main blob must exist (missing: the key set is damaged); an approval may not
        candidates = [approval] if self._path(approval).exists() else []
        for name in [*candidates, _KEK]:
            public, _, selection = self._read_sealed(name)
            if selection.marshal() != self._selection.marshal():
                raise SealError(
                    f"the vault key in {self._path(name)} is sealed to other PCRs than PCR "
                    f"{self._pcr}: configure the PCR it was sealed with"
                )
            if bytes(public.publicArea.authPolicy) == policy:
                return name
        return None

    def _unseal(self, name: str) -> bytes:
        """The KEK from the sealed blob ``name``, over an encrypted policy session."""
        public, private, _ = self._read_sealed(name)
        handle = self._load(name, (public, private))
        try:
            session = self._tpm.start_auth_session(
                self._primary, ESYS_TR.NONE, TPM2_SE.POLICY, _AES128_CFB, TPM2_ALG.SHA256
            )
            try:
                self._tpm.trsess_set_attributes(
                    session, TPMA_SESSION.ENCRYPT | TPMA_SESSION.CONTINUESESSION
                )
                self._tpm.policy_pcr(session, TPM2B_DIGEST(), self._selection)
                kek = bytes(self._tpm.unseal(handle, session1=session))
            finally:
                self._tpm.flush_context(session)
        except TSS2_Exception as exc:
            if exc.error == TPM2_RC.POLICY_FAIL:
                # the PCR moved between choosing the blob and unsealing it
                raise SealError(self._mismatch("the TPM refused to unseal the vault key")) from None
            raise SealError(f"the TPM failed to unseal the vault key: {exc}") from None
        finally:
            self._tpm.flush_context(handle)
        if len(kek) != KEK_BYTES:
            raise SealError(f"the sealed vault key has {len(kek)} bytes, expected {KEK_BYTES}")
        return kek

    def _mismatch(self, what: str) -> str:
        return (
            f"{what}: this box's measured release, configuration and models (PCR {self._pcr}) "
            f"differ from those the vault was sealed to (in {self._state}). If the box was "
            "changed without approval, reinstall the approved release; an approved update must "
            "be approved by the release before it (callveil reseal) and the box rebooted into it"
        )

    def _unmarshal(self, path: Path, *types: type) -> list[Any]:
        """Parse ``path`` as exactly the given TPM structures, one after another."""
        try:
            data = read_private(path)
        except FileNotFoundError:
            raise SealError(
                f"{path} is missing while other keys in {self._state} exist: restore the "
                "directory from backup"
            ) from None
        parsed, offset = [], 0
        try:
            for kind in types:
                value, used = kind.unmarshal(data[offset:])
                # the TSS does not check a TPM2B_PUBLIC's size field: insist on the canonical form
                if value.marshal() != data[offset : offset + used]:
                    raise ValueError("not canonical")
                parsed.append(value)
                offset += used
            if offset != len(data):
                raise ValueError("trailing bytes")
        except (TSS2_Exception, ValueError):
            raise SealError(
                f"{path} is damaged (not a TPM key blob); restore it from backup"
            ) from None
        return parsed

    def _read_object(self, name: str) -> tuple[TPM2B_PUBLIC, TPM2B_PRIVATE]:
        public, private = self._unmarshal(self._path(name), TPM2B_PUBLIC, TPM2B_PRIVATE)
        return public, private

    def _read_sealed(self, name: str) -> tuple[TPM2B_PUBLIC, TPM2B_PRIVATE, TPML_PCR_SELECTION]:
        public, private, selection = self._unmarshal(
            self._path(name), TPM2B_PUBLIC, TPM2B_PRIVATE, TPML_PCR_SELECTION
        )
        return public, private, selection

    def _load(self, name: str, blobs: tuple[TPM2B_PUBLIC, TPM2B_PRIVATE]) -> ESYS_TR:
        public, private = blobs
        try:
            return self._tpm.load(self._primary, private, public)
        except TSS2_Exception as exc:
            raise SealError(
                f"the TPM rejected {self._path(name)} ({exc}): the blob is damaged or was "
                "modified, or was made by another TPM; restore it from backup"
            ) from None


def _unmarshal_exact(kind: Any, data: bytes) -> Any:
    value, used = kind.unmarshal(data)
    if used != len(data) or value.marshal() != data:
        raise ValueError("not exactly one canonical structure")
    return value
