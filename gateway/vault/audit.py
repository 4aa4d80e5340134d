"""The audit log: every staff access, refusal and retention run, hash-chained and signed.

Entries are only ever appended, one transaction each. Every ``sign_every`` entries, and when
the log is closed, verified or exported, the newest chain head is signed with the key
provider's signing key (the TPM's on a TPM box). Before signing, the entries since the last
signed head are checked, so a head never vouches for entries edited in between. The checks
themselves, and what they can and cannot detect, live in :mod:`gateway.verifiers.audit`, the
same code a security team runs off the box.

Entries carry the time of the access to the minute: a staff action, not a call.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import structlog

from gateway.closing import Closing
from gateway.seal.keyprovider import KeyProvider
from gateway.vault.database import open_database, transaction
from gateway.vault.records import VaultError
from gateway.verifiers.audit import (
    EXPORT_FORMAT,
    GENESIS,
    Entry,
    Head,
    Report,
    canonical,
    chain_problems,
    entry_hash,
    head_message,
    head_signed,
    load_public_key,
    verify,
)

GRANTED = "granted"
REFUSED = "refused"
FAILED = "failed"  # granted, but the operation itself did not succeed
DONE = "done"  # an automatic action (retention) that ran

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS entries (
        seq INTEGER PRIMARY KEY NOT NULL,
        body TEXT NOT NULL,
        hash TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS heads (
        seq INTEGER PRIMARY KEY NOT NULL,
        hash TEXT NOT NULL,
        signature BLOB NOT NULL
    )
    """,
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What one entry says; ``subject`` is a record id or the account an action is about."""

    user: str
    role: str
    action: str
    outcome: str
    purpose: str = ""
    partition: str | None = None
    subject: str | None = None
    reason: str = ""


class AuditLog(Closing):
    """The log at ``path``, whose heads ``provider`` signs."""

    def __init__(self, path: Path, provider: KeyProvider, *, sign_every: int = 100) -> None:
        if sign_every < 1:
            raise VaultError(f"sign_every must be at least 1, got {sign_every}")
        self._provider = provider
        self._sign_every = sign_every
        self._public_key = provider.public_key_pem()
        self._key = load_public_key(self._public_key)
        self._db = open_database(path, _SCHEMA)
        self._closed = False

    def append(self, event: AuditEvent) -> int:
        """Add ``event`` as the next entry; returns its sequence number."""
        time = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")
        with transaction(self._db):
            last = self._db.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            body = canonical({"seq": seq, "prev": prev, "time": time, **asdict(event)})
            self._db.execute(
                "INSERT INTO entries (seq, body, hash) VALUES (?, ?, ?)",
                (seq, body, entry_hash(body)),
            )
        if seq % self._sign_every == 0:
            self.sign_head()
        return seq

    def sign_head(self) -> int | None:
        """Sign the newest entry's hash; returns its seq, or None if nothing new was signed.

        Refuses (logging why) when the entries since the last signed head do not form an
        intact chain from it: ``verify`` then reports the damage.
        """
        with transaction(self._db):  # no entry may slip in between the check and the signature
            last = self._db.execute(
                "SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            row = self._db.execute(
                "SELECT seq, hash, signature FROM heads ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            head = Head(row[0], row[1], row[2]) if row else Head(0, GENESIS, b"")
            if last is None or last[0] <= head.seq:
                return None
            problem = self._unsigned_tail_problem(head)
            if problem:
                log.error("audit_head_not_signed", reason=problem)
                return None
            signature = self._provider.sign(head_message(last[0], last[1]))
            self._db.execute(
                "INSERT INTO heads (seq, hash, signature) VALUES (?, ?, ?)",
                (last[0], last[1], signature),
            )
        return last[0]

    def _unsigned_tail_problem(self, head: Head) -> str | None:
        if head.seq:
            if not head_signed(self._key, head):
                return f"the last signed head (entry {head.seq}) has no valid signature"
            stored = self._db.execute(
                "SELECT hash FROM entries WHERE seq = ?", (head.seq,)
            ).fetchone()
            if stored is None or stored[0] != head.hash:
                return f"entry {head.seq} no longer matches its signed head"
        tail = self._db.execute(
            "SELECT body, hash FROM entries WHERE seq > ? ORDER BY seq", (head.seq,)
        )
        problems = chain_problems(
            [Entry(body, hashed) for body, hashed in tail],
            first_seq=head.seq + 1,
            first_prev=head.hash,
        )
        return "; ".join(p.message for p in problems) or None

    def entries(self) -> list[Entry]:
        """Every entry, in stored order."""
        rows = self._db.execute("SELECT body, hash FROM entries ORDER BY seq")
        return [Entry(body, hashed) for body, hashed in rows]

    def heads(self) -> list[Head]:
        rows = self._db.execute("SELECT seq, hash, signature FROM heads ORDER BY seq")
        return [Head(seq, hashed, signature) for seq, hashed, signature in rows]

    def verify(self) -> Report:
        """Check the whole log against the provider's public key (signing the head first)."""
        self.sign_head()
        return verify(self.entries(), self.heads(), self._public_key)

    def export(self, dest: Path) -> int:
        """Write everything a verifier needs to ``dest`` (never overwritten); returns entries."""
        self.sign_head()
        entries, heads = self.entries(), self.heads()
        document = {
            "format": EXPORT_FORMAT,
            "public_key": self._public_key.decode("ascii"),
            "entries": [{"body": e.body, "hash": e.hash} for e in entries],
            "heads": [
                {
                    "seq": h.seq,
                    "hash": h.hash,
                    "signature": base64.b64encode(h.signature).decode("ascii"),
                }
                for h in heads
            ],
        }
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise VaultError(f"{dest} exists already; choose a new file name") from None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
        return len(entries)

    @property
    def public_key_pem(self) -> bytes:
        return self._public_key

    def close(self) -> None:
        """Sign the newest head (so a cleanly closed log has no unsigned tail) and close."""
        if self._closed:
            return
        self._closed = True
        try:
            self.sign_head()
        finally:
            self._db.close()
