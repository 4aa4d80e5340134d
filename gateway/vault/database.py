"""The SQLite settings every callveil database shares (vault, accounts, audit log, outbox).

Created 0600 before SQLite opens them, WAL with ``synchronous=FULL`` and one immediate
transaction per change, so a process killed mid-write leaves the last committed state, and
several processes (daemon, staff commands) can share a file, each waiting its turn.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.vault.records import VaultError

BUSY_TIMEOUT_MS = 10_000


def open_database(path: Path, schema: Iterable[str]) -> sqlite3.Connection:
    """Open (creating, mode 0600) the database at ``path``; run the idempotent ``schema``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    # check_same_thread off: the daemon opens its stores in the main thread and hands them to
    # the one writer thread that uses them; no connection is ever used by two threads at once
    db = sqlite3.connect(
        path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
    )
    try:
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise VaultError(
                f"{path} cannot use WAL (journal mode stays {mode!r}); put it on a local file "
                "system that supports shared memory"
            )
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA secure_delete=ON")
        db.execute("PRAGMA temp_store=MEMORY")
        with transaction(db):
            for statement in schema:
                db.execute(statement)
    except sqlite3.DatabaseError as exc:
        db.close()
        raise VaultError(
            f"{path} is not a usable database ({exc}); restore it from backup"
        ) from None
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once so that concurrent writers queue up."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
