"""The outbox: every payload on disk before it is sent, removed only once the broker has it.

SQLite with WAL and ``synchronous=FULL``: ``put`` returns after the payload is committed, so a
crash, a power cut or a broker outage loses nothing accepted; ``remove`` runs on the broker's
PUBACK. Sequence numbers come from a counter stored beside the entries (not from the highest
entry, which may have been removed), so they grow across restarts and a receiver can tell a
replay from a new payload.

Bounded by entries and bytes. When full, ``put`` refuses the new payload and keeps the old
ones: payloads are released aggregates that will not be produced again, the oldest matter as
much as the newest, and the caller (the aggregator) keeps a refused body and offers it again,
so refusing loses nothing while dropping would.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from gateway.closing import Closing
from gateway.vault.database import open_database, transaction

log = structlog.get_logger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL
    )""",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO counters (name, value) VALUES ('seq', 0), ('session', 0)",
)


class OutboxFull(Exception):
    """The outbox is at its limit; nothing was added and nothing was dropped."""

    def __init__(self, message: str, nbytes: int) -> None:
        super().__init__(message)
        self.nbytes = nbytes  # size of the refused payload


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    topic: str
    payload: bytes


class Outbox(Closing):
    """The on-disk queue at ``path``; use it from the thread that opened it."""

    def __init__(self, path: Path, *, max_entries: int, max_bytes: int) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("the outbox needs room for at least one entry and one byte")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._db = open_database(path, _SCHEMA)

    def _bump(self, name: str) -> int:
        self._db.execute("UPDATE counters SET value = value + 1 WHERE name = ?", (name,))
        return self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0]

    def put(self, topic: str, payload_for: Callable[[int], bytes]) -> int:
        """Store ``payload_for(seq)`` under the next sequence number; return that number.

        Raises OutboxFull (after logging it) when the entry would pass a limit.
        """
        with transaction(self._db):
            count, size = self._usage()
            seq = self._bump("seq")
            payload = payload_for(seq)
            if not self._fits(count, size, len(payload)):
                log.error(
                    "outbox_full",
                    entries=count,
                    bytes=size,
                    max_entries=self._max_entries,
                    max_bytes=self._max_bytes,
                    refused_bytes=len(payload),
                )
                raise OutboxFull(
                    f"the outbox holds {count} payloads ({size} bytes) of at most "
                    f"{self._max_entries} ({self._max_bytes} bytes); the new payload is refused "
                    "and kept by its producer: restore the broker connection, or raise "
                    "mqtt.outbox_max_entries / mqtt.outbox_max_bytes",
                    len(payload),
                )
            self._db.execute(
                "INSERT INTO entries (seq, topic, payload) VALUES (?, ?, ?)", (seq, topic, payload)
            )
        return seq

    def pending(self, after: int = 0, limit: int = 100) -> list[Entry]:
        """Entries with a sequence number above ``after``, oldest first."""
        rows = self._db.execute(
            "SELECT seq, topic, payload FROM entries WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [Entry(seq, topic, bytes(payload)) for seq, topic, payload in rows]

    def remove(self, seq: int) -> None:
        """Forget entry ``seq``: the broker has acknowledged it."""
        with transaction(self._db):
            self._db.execute("DELETE FROM entries WHERE seq = ?", (seq,))

    def _usage(self) -> tuple[int, int]:
        count, size = self._db.execute(
            "SELECT count(*), coalesce(sum(length(payload)), 0) FROM entries"
        ).fetchone()
        return count, size

    def usage(self) -> tuple[int, int]:
        """(entries, bytes) waiting."""
        return self._usage()

    def _fits(self, count: int, size: int, nbytes: int) -> bool:
        return count < self._max_entries and size + nbytes <= self._max_bytes

    def fits(self, nbytes: int) -> bool:
        """True if a payload of ``nbytes`` would be accepted now."""
        return self._fits(*self._usage(), nbytes)

    def next_session(self) -> int:
        """A new connection-session number (the birth/death sequence), above all before it."""
        with transaction(self._db):
            return self._bump("session")

    def close(self) -> None:
        self._db.close()
