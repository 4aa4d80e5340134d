"""Envelope sealing: round trips, and every kind of damage detected before any plaintext."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.seal.envelope import HEADER_BYTES, OVERHEAD, Sealer
from gateway.seal.keyprovider import SealError
from gateway.seal.softkey import SoftwareKeyProvider

SCRYPT_N_FAST = 2**14


@pytest.fixture(scope="module")
def sealer(tmp_path_factory: pytest.TempPathFactory) -> Sealer:
    path = tmp_path_factory.mktemp("envelope") / "box.key"
    return Sealer(SoftwareKeyProvider(path, b"envelope tests", scrypt_n=SCRYPT_N_FAST))


@pytest.fixture(scope="module")
def other_box(tmp_path_factory: pytest.TempPathFactory) -> Sealer:
    path = tmp_path_factory.mktemp("envelope-other") / "box.key"
    return Sealer(SoftwareKeyProvider(path, b"envelope tests", scrypt_n=SCRYPT_N_FAST))


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 64 * 1024, 1024 * 1024 + 3])
def test_round_trip(sealer: Sealer, size: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(size))
    blob = sealer.seal(data, context=b"partition:analytics")
    assert len(blob) == size + OVERHEAD
    assert sealer.open(blob, context=b"partition:analytics") == data


def test_each_blob_has_its_own_data_key(sealer: Sealer) -> None:
    data = b"the same record twice" * 4
    first, second = sealer.seal(data), sealer.seal(data)
    assert first[:13] == second[:13]  # magic, version and key id
    assert first[13:] != second[13:]
    assert data not in first and data[:16] not in first


def test_every_single_bit_flip_is_detected(sealer: Sealer) -> None:
    blob = sealer.seal(b"a short call summary", context=b"ctx")
    for bit in range(len(blob) * 8):
        damaged = bytearray(blob)
        damaged[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(SealError):
            sealer.open(bytes(damaged), context=b"ctx")


def test_every_truncation_and_extension_is_detected(sealer: Sealer) -> None:
    blob = sealer.seal(b"a short call summary")
    for end in range(len(blob)):
        with pytest.raises(SealError):
            sealer.open(blob[:end])
    with pytest.raises(SealError):
        sealer.open(blob + b"\0")


def test_wrong_context_is_rejected(sealer: Sealer) -> None:
    blob = sealer.seal(b"record", context=b"partition:contract")
    for context in (b"", b"partition:analytics", b"partition:contract\0"):
        with pytest.raises(SealError, match="context"):
            sealer.open(blob, context=context)
    assert sealer.open(blob, context=b"partition:contract") == b"record"


def test_blob_from_another_box_is_named_as_such(sealer: Sealer, other_box: Sealer) -> None:
    with pytest.raises(SealError, match="another key"):
        sealer.open(other_box.seal(b"record"))


def test_wrapped_key_moved_between_blobs_is_rejected(sealer: Sealer) -> None:
    a, b = sealer.seal(b"record a"), sealer.seal(b"record b")
    spliced = a[:HEADER_BYTES] + b[HEADER_BYTES:]
    with pytest.raises(SealError):
        sealer.open(spliced)


def test_not_a_blob(sealer: Sealer) -> None:
    with pytest.raises(SealError, match="shorter"):
        sealer.open(b"")
    with pytest.raises(SealError, match="magic"):
        sealer.open(b"NOPE" + bytes(OVERHEAD))
    blob = bytearray(sealer.seal(b"x"))
    blob[4] = 2
    with pytest.raises(SealError, match="version 2"):
        sealer.open(bytes(blob))


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_open(sealer: Sealer, data: bytes) -> None:
    with pytest.raises(SealError):
        sealer.open(data)


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=64),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(1, 255)), min_size=1),
)
def test_mutated_blobs_never_open(sealer: Sealer, data: bytes, edits: list) -> None:
    original = sealer.seal(data)
    blob = bytearray(original)
    for position, xor in edits:
        blob[position % len(blob)] ^= xor
    if bytes(blob) == original:  # the edits cancelled out
        assert sealer.open(original) == data
    else:
        with pytest.raises(SealError):
            sealer.open(bytes(blob))


def test_sealer_needs_a_32_byte_kek(tmp_path: Path) -> None:
    class ShortKey(SoftwareKeyProvider):
        def unwrap_kek(self) -> bytes:
            return b"too short"

    with pytest.raises(SealError, match="9-byte KEK"):
        Sealer(ShortKey(tmp_path / "k", b"pass", scrypt_n=SCRYPT_N_FAST))
