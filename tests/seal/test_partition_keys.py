"""Per-partition KEKs: a Sealer's label gives it its own key, derived from the provider's."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.seal.envelope import Sealer
from gateway.seal.keyprovider import SealError
from gateway.seal.softkey import SoftwareKeyProvider

SCRYPT_N_FAST = 2**14


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> SoftwareKeyProvider:
    path = tmp_path_factory.mktemp("labels") / "box.key"
    return SoftwareKeyProvider(path, b"label tests", scrypt_n=SCRYPT_N_FAST)


def test_each_label_opens_only_its_own_blobs(provider: SoftwareKeyProvider) -> None:
    analytics = Sealer(provider, label="analytics")
    contract = Sealer(provider, label="contract")
    unlabelled = Sealer(provider)
    blobs = {
        "analytics": analytics.seal(b"summary", context=b"ctx"),
        "contract": contract.seal(b"evidence", context=b"ctx"),
        "": unlabelled.seal(b"plain", context=b"ctx"),
    }
    sealers = {"analytics": analytics, "contract": contract, "": unlabelled}
    for owner, blob in blobs.items():
        for name, sealer in sealers.items():
            if name == owner:
                assert sealer.open(blob, context=b"ctx")
            else:
                with pytest.raises(SealError, match="another partition"):
                    sealer.open(blob, context=b"ctx")


def test_a_label_gives_the_same_key_in_every_process(provider: SoftwareKeyProvider) -> None:
    blob = Sealer(provider, label="contract").seal(b"evidence")
    assert Sealer(provider, label="contract").open(blob) == b"evidence"


def test_labelled_kek_is_hkdf_of_the_provider_kek(provider: SoftwareKeyProvider) -> None:
    """Derived as documented, so it can be reproduced (e.g. after a provider migration)."""
    kek = provider.unwrap_kek()
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"callveil labelled kek v1\x00legal"
    ).derive(kek)
    assert derived != kek

    class Fixed:
        name = "fixed"

        def unwrap_kek(self) -> bytes:
            return derived

    blob = Sealer(provider, label="legal").seal(b"record")
    assert Sealer(Fixed()).open(blob) == b"record"  # type: ignore[arg-type]


def test_labels_of_another_box_do_not_open(provider: SoftwareKeyProvider, tmp_path: Path) -> None:
    other = SoftwareKeyProvider(tmp_path / "other.key", b"label tests", scrypt_n=SCRYPT_N_FAST)
    blob = Sealer(other, label="analytics").seal(b"record")
    with pytest.raises(SealError, match="another key"):
        Sealer(provider, label="analytics").open(blob)
