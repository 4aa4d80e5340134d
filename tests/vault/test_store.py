"""The vault against real SQLite files: round trips, tampering, shredding, crashes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.seal.envelope import HEADER_BYTES, Sealer
from gateway.seal.keyprovider import SealError
from gateway.vault.records import VaultError, seal_context
from gateway.vault.store import Vault
from tests.seal.tpm_helpers import TEST_PCR

REPO = Path(__file__).resolve().parents[2]
DAY = dt.date(2026, 11, 29)
LATER = dt.date(2027, 11, 29)
MARKER = b"PLAINTEXT-AUDIO-MARKER-0123456789"


def audio(tag: bytes = b"", size: int = 160_000) -> bytes:
    """Record content that is recognisable anywhere in a file."""
    unit = MARKER + tag
    return (unit * (size // len(unit) + 1))[:size]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    (tmp_path / "vault").mkdir()
    return tmp_path / "vault" / "vault.db"


@pytest.fixture
def vault(db: Path, sealers: dict[str, Sealer]) -> Iterator[Vault]:
    with Vault(db, sealers) as v:
        yield v


def edit(db: Path, sql: str, *params: object) -> None:
    """Change the file behind the vault's back, as someone with disk access could."""
    with sqlite3.connect(db) as con:
        assert con.execute(sql, params).rowcount == 1
    con.close()


def stored_blob(db: Path, record_id: str) -> bytes:
    con = sqlite3.connect(db)
    try:
        row = con.execute("SELECT blob FROM records WHERE id = ?", (bytes.fromhex(record_id),))
        return row.fetchone()[0]
    finally:
        con.close()


def disk_bytes(db: Path) -> bytes:
    """Everything in the vault's directory: database, WAL, shared memory, anything else."""
    return b"".join(p.read_bytes() for p in sorted(db.parent.iterdir()))


@pytest.mark.parametrize(
    ("partition", "kind"),
    [("analytics", "recording"), ("analytics", "summary"), ("contract", "recording")],
)
def test_round_trip_per_partition(vault: Vault, db: Path, sealers, partition, kind) -> None:
    data = audio(partition.encode())
    record_id = vault.put(kind, data, partition=partition, period="2026-W48", expires=LATER)
    assert len(bytes.fromhex(record_id)) == 16
    assert vault.get(record_id) == data
    [info] = vault.list(partition)
    assert (info.id, info.kind, info.period, info.phase, info.expires) == (
        record_id,
        kind,
        "2026-W48",
        "collected",
        LATER,
    )
    other = "contract" if partition == "analytics" else "analytics"
    assert vault.list(other) == ()
    vault.close()
    with Vault(db, sealers) as reopened:
        assert reopened.get(record_id) == data


def test_ids_are_random_and_order_reveals_nothing(vault: Vault) -> None:
    ids = [
        vault.put("summary", b"s", partition="analytics", period=DAY.isoformat(), expires=LATER)
        for _ in range(40)
    ]
    assert len(set(ids)) == 40
    listed = [info.id for info in vault.list("analytics")]
    assert listed == sorted(ids) != ids


def test_other_partitions_key_cannot_open_a_record(vault: Vault, db: Path, sealers) -> None:
    record_id = vault.put(
        "recording", audio(), partition="analytics", period="2026-W48", expires=LATER
    )
    blob = stored_blob(db, record_id)
    context = seal_context(
        bytes.fromhex(record_id), "analytics", "recording", "2026-W48", LATER.isoformat()
    )
    assert sealers["analytics"].open(blob, context=context) == audio()
    with pytest.raises(SealError, match="another key"):
        sealers["contract"].open(blob, context=context)
    # relabelled as a contract record: the contract key refuses it
    edit(db, "UPDATE records SET partition = 'contract' WHERE id = ?", bytes.fromhex(record_id))
    with pytest.raises(SealError):
        vault.get(record_id)


def test_partition_without_its_key_is_refused(db: Path, sealers) -> None:
    with Vault(db, {"analytics": sealers["analytics"]}) as v:
        with pytest.raises(VaultError, match="without the contract partition's key"):
            v.put("recording", b"x", partition="contract", period="2026-W48", expires=LATER)
        with pytest.raises(VaultError, match="unknown partition 'drop'"):
            v.put("recording", b"x", partition="drop", period="2026-W48", expires=LATER)
    with pytest.raises(VaultError, match="unknown partition"):
        Vault(db, {"archive": sealers["analytics"]})


@pytest.mark.parametrize(
    "where",
    [5, HEADER_BYTES - 20, HEADER_BYTES + 1000, -1],
    ids=["key-id", "wrapped-key", "ciphertext", "tag"],
)
def test_flipped_bit_is_detected_never_garbage(vault: Vault, db: Path, where: int) -> None:
    record_id = vault.put(
        "recording", audio(), partition="analytics", period="2026-W48", expires=LATER
    )
    blob = bytearray(stored_blob(db, record_id))
    blob[where] ^= 0x08
    edit(db, "UPDATE records SET blob = ? WHERE id = ?", bytes(blob), bytes.fromhex(record_id))
    with pytest.raises(SealError):
        vault.get(record_id)


@pytest.mark.parametrize(
    ("column", "value"), [("period", "2026-W49"), ("expires", "2099-01-01"), ("kind", "summary")]
)
def test_edited_metadata_is_detected(vault: Vault, db: Path, column: str, value: str) -> None:
    record_id = vault.put(
        "recording", audio(), partition="analytics", period="2026-W48", expires=LATER
    )
    edit(db, f"UPDATE records SET {column} = ? WHERE id = ?", value, bytes.fromhex(record_id))
    with pytest.raises(SealError, match="failed authentication"):
        vault.get(record_id)


def test_swapped_blobs_are_detected(vault: Vault, db: Path) -> None:
    a = vault.put("recording", audio(b"a"), partition="analytics", period="2026-W48", expires=LATER)
    b = vault.put("recording", audio(b"b"), partition="analytics", period="2026-W48", expires=LATER)
    blob_a, blob_b = stored_blob(db, a), stored_blob(db, b)
    edit(db, "UPDATE records SET blob = ? WHERE id = ?", blob_b, bytes.fromhex(a))
    edit(db, "UPDATE records SET blob = ? WHERE id = ?", blob_a, bytes.fromhex(b))
    for record_id in (a, b):
        with pytest.raises(SealError, match="failed authentication"):
            vault.get(record_id)


def test_plaintext_and_keys_never_reach_the_disk(db: Path, sealers, keks: list[bytes]) -> None:
    with Vault(db, sealers) as v:
        for i in range(5):
            v.put(
                "recording",
                audio(b"%d" % i),
                partition="analytics",
                period="2026-W48",
                expires=LATER,
            )
            v.put(
                "recording",
                audio(b"%d" % i),
                partition="contract",
                period="2026-11-29",
                expires=LATER,
            )
        assert len(disk_bytes(db)) > 10 * 160_000  # the records are in the files, sealed
        on_disk = disk_bytes(db)
    on_disk += disk_bytes(db)  # after close: WAL checkpointed into the database
    assert MARKER not in on_disk
    assert MARKER[:16] not in on_disk
    for kek in keks:
        assert kek not in on_disk


def test_shred_scrubs_the_record_from_every_file(vault: Vault, db: Path) -> None:
    expiring = [
        vault.put(
            "recording", audio(b"old"), partition="analytics", period="2026-W40", expires=DAY
        ),
        vault.put(
            "recording", audio(b"old"), partition="contract", period="2026-10-01", expires=DAY
        ),
    ]
    # one copy in the database file proper, the next ones only in the WAL
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    con.close()
    kept = vault.put(
        "recording", audio(b"new"), partition="analytics", period="2026-W48", expires=LATER
    )
    expiring.append(
        vault.put(
            "summary",
            audio(b"old"),
            partition="analytics",
            period="2026-W41",
            expires=DAY - dt.timedelta(days=3),
        )
    )
    blobs = [stored_blob(db, record_id) for record_id in expiring]
    # 16-byte samples across each blob, wrapped data key included; a few straddle page breaks
    samples = [blob[i : i + 16] for blob in blobs for i in range(0, len(blob) - 16, 1499)]
    before = disk_bytes(db)
    assert sum(s in before for s in samples) > 0.9 * len(samples)

    assert vault.shred_expired(DAY) == 3
    after = disk_bytes(db)
    assert [s for s in samples if s in after] == []
    assert db.with_name("vault.db-wal").stat().st_size == 0
    con = sqlite3.connect(db)
    assert con.execute("SELECT count(*) FROM records").fetchone()[0] == 1
    con.close()
    assert vault.get(kept) == audio(b"new")
    with pytest.raises(VaultError, match="never stored, or shredded"):
        vault.get(expiring[0])
    assert vault.shred_expired(DAY) == 0


def test_phases_and_deletion(vault: Vault, db: Path) -> None:
    record_id = vault.put(
        "recording", audio(), partition="analytics", period="2026-W48", expires=LATER
    )
    for phase in ("processed", "analysed", "kept"):
        vault.set_phase(record_id, phase)
        assert vault.list("analytics")[0].phase == phase
    with pytest.raises(VaultError, match="cannot move from 'kept' to 'processed'"):
        vault.set_phase(record_id, "processed")
    assert vault.list("analytics")[0].phase == "kept"
    blob = stored_blob(db, record_id)
    vault.set_phase(record_id, "deleted")
    assert vault.list("analytics") == ()
    assert blob[HEADER_BYTES : HEADER_BYTES + 64] not in disk_bytes(db)
    with pytest.raises(VaultError, match="never stored, or shredded"):
        vault.set_phase(record_id, "deleted")
    with pytest.raises(VaultError, match="not 32 hex digits"):
        vault.get("not-an-id")


def test_invalid_period_and_expiry_are_refused(vault: Vault) -> None:
    with pytest.raises(VaultError, match="never a finer time"):
        vault.put(
            "recording", b"x", partition="analytics", period="2026-11-29T10:42", expires=LATER
        )
    with pytest.raises(VaultError, match=r"expires must be a datetime\.date"):
        vault.put(
            "recording",
            b"x",
            partition="analytics",
            period="2026-W48",
            expires=dt.datetime(2027, 1, 1),
        )
    with pytest.raises(VaultError, match="holds no 'summary'"):
        vault.put("summary", b"x", partition="contract", period="2026-W48", expires=LATER)
    assert vault.list("analytics") == vault.list("contract") == ()


WRITER = """
import datetime, sys
from pathlib import Path
from gateway.seal.envelope import Sealer
from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.store import Vault

keys, db, start = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
partitions = ("analytics", "contract")
providers = {p: SoftwareKeyProvider(keys / f"{p}.key", b"vault tests") for p in partitions}
vault = Vault(db, {p: Sealer(provider) for p, provider in providers.items()})
for i in range(start, start + 100000):
    partition = partitions[i % 2]
    record_id = vault.put("recording", b"%08d" % i * 8000, partition=partition, period="2026-W48",
                          expires=datetime.date(2027, 1, 1))
    print(record_id, flush=True)
"""


def test_killed_writer_leaves_a_consistent_vault(
    db: Path, key_files: dict[str, Path], sealers
) -> None:
    committed: list[str] = []
    for run in range(5):
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(key_files["analytics"].parent),
                str(db),
                str(run * 10**6),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert child.stdout is not None
        # killed while it keeps writing: the next put is somewhere between seal and commit
        for _ in range(15 + 7 * run):
            committed.append(child.stdout.readline().decode().strip())
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL

    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    con.close()
    with Vault(db, sealers) as v:
        listed = [info.id for p in ("analytics", "contract") for info in v.list(p)]
        assert set(committed) <= set(listed)
        for record_id in listed:
            data = v.get(record_id)
            assert len(data) == 64_000 and data == data[:8] * 8000


def test_tpm_sealed_partition(tpm: str, db: Path, tmp_path: Path, sealers) -> None:
    from gateway.seal.tpm import TpmKeyProvider

    def tpm_sealer() -> Sealer:
        with TpmKeyProvider(tpm, tmp_path / "tpm", measurement=b"r" * 32, pcr=TEST_PCR) as p:
            return Sealer(p)

    with Vault(db, {"analytics": tpm_sealer(), "contract": sealers["contract"]}) as v:
        record_id = v.put(
            "recording", audio(), partition="analytics", period="2026-W48", expires=LATER
        )
    # a restarted daemon unseals the same KEK from the TPM and reads the record back
    with Vault(db, {"analytics": tpm_sealer()}) as v:
        assert v.get(record_id) == audio()
    with (
        Vault(db, {"analytics": sealers["analytics"]}) as v,
        pytest.raises(SealError, match="another key"),
    ):
        v.get(record_id)
