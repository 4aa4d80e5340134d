"""Sealed records in SQLite: one row per record, its own data key inside its blob.

The table is keyed by a random 128-bit id (``WITHOUT ROWID``), so neither the id nor the
storage order says when a record was written. Deleting a row destroys the record's wrapped
data key; ``secure_delete`` zeroes the freed pages and a truncating checkpoint empties the WAL,
so a shredded record leaves nothing behind in the vault's files. WAL with ``synchronous=FULL``
and one transaction per write keep the file consistent when the process dies mid-write.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.closing import Closing
from gateway.seal.envelope import Sealer
from gateway.vault.database import open_database, transaction
from gateway.vault.phases import COLLECTED, DELETED, check_transition
from gateway.vault.records import (
    ID_BYTES,
    PARTITIONS,
    Partition,
    RecordInfo,
    VaultError,
    check_day,
    check_kind,
    check_partition,
    check_period,
    seal_context,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id BLOB PRIMARY KEY NOT NULL CHECK (length(id) = 16),
    partition TEXT NOT NULL,
    kind TEXT NOT NULL,
    period TEXT NOT NULL,
    phase TEXT NOT NULL,
    expires TEXT NOT NULL,
    blob BLOB NOT NULL
) WITHOUT ROWID
"""


def _parse_id(record_id: str) -> bytes:
    try:
        raw = bytes.fromhex(record_id)
    except (TypeError, ValueError):
        raw = b""
    if len(raw) != ID_BYTES:
        raise VaultError(f"record id {record_id!r} is not {2 * ID_BYTES} hex digits")
    return raw


class Vault(Closing):
    """The record store at ``path``; ``sealers`` holds one Sealer per partition it may use.

    A partition without a Sealer can be listed and shredded but not written or read, so each
    partition's key can be given only to the processes that need it.
    """

    def __init__(self, path: Path, sealers: Mapping[str, Sealer]) -> None:
        for partition in sealers:
            check_partition(partition)
        if not sealers:
            raise VaultError(f"the vault needs a Sealer for at least one of {PARTITIONS}")
        self._sealers = dict(sealers)
        self._db = open_database(path, [_SCHEMA])
        # sealed records rely on deleted pages being zeroed: refuse a build that cannot
        if self._db.execute("PRAGMA secure_delete").fetchone()[0] != 1:
            self._db.close()
            raise VaultError("this SQLite build cannot zero deleted content (secure_delete)")

    def _sealer(self, partition: str) -> Sealer:
        sealer = self._sealers.get(partition)
        if sealer is None:
            raise VaultError(
                f"this vault was opened without the {partition} partition's key; open it with "
                f"a Sealer for {partition!r} to read or write its records"
            )
        return sealer

    def put(self, kind: str, data: bytes, *, partition: str, period: str, expires: dt.date) -> str:
        """Seal ``data`` as a new record in phase ``collected``; returns its id (hex)."""
        part = check_partition(partition)
        sealer = self._sealer(part)
        check_kind(part, kind)
        check_period(period)
        until = check_day(expires, "expires").isoformat()
        record_id = os.urandom(ID_BYTES)
        blob = sealer.seal(data, context=seal_context(record_id, part, kind, period, until))
        with transaction(self._db):
            self._db.execute(
                "INSERT INTO records (id, partition, kind, period, phase, expires, blob) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record_id, part, kind, period, COLLECTED, until, blob),
            )
        return record_id.hex()

    def get(self, record_id: str) -> bytes:
        """The record's data; SealError if its row was altered in any way that matters."""
        raw = _parse_id(record_id)
        row = self._db.execute(
            "SELECT partition, kind, period, expires, blob FROM records WHERE id = ?", (raw,)
        ).fetchone()
        if row is None:
            raise VaultError(f"no record {record_id} in the vault (never stored, or shredded)")
        partition, kind, period, expires, blob = row
        sealer = self._sealer(check_partition(partition))
        return sealer.open(blob, context=seal_context(raw, partition, kind, period, expires))

    def list(self, partition: str) -> tuple[RecordInfo, ...]:
        """Metadata of every record in ``partition``, in id order (which is random)."""
        part: Partition = check_partition(partition)
        rows = self._db.execute(
            "SELECT id, kind, period, phase, expires FROM records WHERE partition = ? ORDER BY id",
            (part,),
        )
        return tuple(
            RecordInfo(raw.hex(), part, kind, period, phase, dt.date.fromisoformat(expires))
            for raw, kind, period, phase, expires in rows
        )

    def set_phase(self, record_id: str, phase: str) -> None:
        """Move a record forward; ``deleted`` crypto-shreds it at once."""
        raw = _parse_id(record_id)
        with transaction(self._db):
            row = self._db.execute(
                "SELECT partition, phase FROM records WHERE id = ?", (raw,)
            ).fetchone()
            if row is None:
                raise VaultError(f"no record {record_id} in the vault (never stored, or shredded)")
            check_transition(check_partition(row[0]), row[1], phase)
            if phase == DELETED:
                self._db.execute("DELETE FROM records WHERE id = ?", (raw,))
            else:
                self._db.execute("UPDATE records SET phase = ? WHERE id = ?", (phase, raw))
        if phase == DELETED:
            self._scrub()

    def shred_expired(self, today: dt.date) -> int:
        """Crypto-shred every record whose expiry day is ``today`` or earlier; returns how many."""
        day = check_day(today, "today").isoformat()
        with transaction(self._db):
            count = self._db.execute("DELETE FROM records WHERE expires <= ?", (day,)).rowcount
        # also after zero deletions: finishes the scrub of a run that found the WAL busy
        self._scrub()
        return count

    def _scrub(self) -> None:
        # Deleted rows were zeroed in the pages written to the WAL; older WAL frames may still
        # hold them, so move everything into the database and cut the WAL to zero bytes.
        busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            raise VaultError(
                "the records are deleted but another process holds the vault open, so their "
                "old copies stay in the WAL file; close the other process and shred again"
            )

    def close(self) -> None:
        self._db.close()
