"""Named staff accounts: a role each, passwords kept only as Argon2id hashes, guessing slowed.

Rate limiting is a persistent temporary lockout: after ``free_attempts`` wrong passwords in a
row an account is locked for ``lockout_s``, and every further wrong password doubles the lock
(up to ``lockout_max_s``). While locked, attempts are refused without checking the password
and without extending the lock. The count and the lock live in the database, so restarting
the program or the box does not reset them; a right password (after the lock) or a new
password set by an administrator does. Unknown names get the same answer as wrong passwords,
after the same hashing work, so the refusals do not reveal which accounts exist.
"""

from __future__ import annotations

import contextlib
import math
import re
import sqlite3
import time
from dataclasses import dataclass, replace
from pathlib import Path

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from gateway.closing import Closing
from gateway.vault.database import open_database, transaction
from gateway.vault.permissions import ADMINISTRATOR, ROLES, AccessDenied
from gateway.vault.records import VaultError

NAME_PATTERN = re.compile(r"[a-z][a-z0-9._-]{1,31}")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_WRONG = "wrong user name or password"

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        name TEXT PRIMARY KEY NOT NULL,
        role TEXT NOT NULL,
        hash TEXT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        locked_until REAL NOT NULL DEFAULT 0
    )
    """,
)


class AuthenticationError(AccessDenied):
    """A wrong password, an unknown name or a locked account."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str


@dataclass(frozen=True, slots=True)
class RateLimit:
    free_attempts: int = 3
    lockout_s: float = 30.0
    lockout_max_s: float = 3600.0

    def lockout(self, failures: int) -> float:
        """Seconds an account stays locked after ``failures`` wrong passwords in a row."""
        extra = failures - self.free_attempts
        if extra < 0:
            return 0.0
        return min(self.lockout_s * 2.0 ** min(extra, 32), self.lockout_max_s)


def production_hasher(memory_mib: int = 64) -> PasswordHasher:
    """Argon2id with RFC 9106's second recommended set (64 MiB, 3 passes, 4 lanes); boxes
    short of memory may lower the memory (never below OWASP's 19 MiB minimum)."""
    if memory_mib < 19:
        raise VaultError(f"{memory_mib} MiB is too little memory for password hashing (min 19)")
    profile = profiles.RFC_9106_LOW_MEMORY
    return PasswordHasher.from_parameters(replace(profile, memory_cost=memory_mib * 1024))


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise VaultError(
            f"user name {name!r} is not allowed: use 2-32 lowercase letters, digits, '.', '_' or "
            "'-', starting with a letter (a staff login, not an e-mail address or a number)"
        )
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise VaultError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    return role


def check_password(name: str, password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise VaultError(
            f"a password needs {MIN_PASSWORD} to {MAX_PASSWORD} characters; "
            f"this one has {len(password)}"
        )
    if name in password.lower():
        raise VaultError("a password must not contain the user name")
    return password


class Users(Closing):
    """The staff accounts stored at ``path``.

    ``hasher`` defaults to :func:`production_hasher`; tests pass a cheaper one explicitly.
    """

    def __init__(
        self,
        path: Path,
        *,
        limits: RateLimit | None = None,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self._limits = limits or RateLimit()
        self._hasher = hasher or production_hasher()
        self._dummy: str | None = None
        self._db = open_database(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def count(self) -> int:
        return self._db.execute("SELECT count(*) FROM users").fetchone()[0]

    def list(self) -> tuple[User, ...]:
        rows = self._db.execute("SELECT name, role FROM users ORDER BY name")
        return tuple(User(name, role) for name, role in rows)

    def get(self, name: str) -> User:
        row = self._db.execute("SELECT role FROM users WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise VaultError(f"there is no user {name!r}; `callveil users list` shows them")
        return User(name, row[0])

    def bootstrap(self, name: str, password: str) -> User:
        """Create the first administrator; refused once any account exists."""
        self._refuse_bootstrap_if_staffed()
        hashed = self._hashed(check_name(name), password)
        with transaction(self._db):
            self._refuse_bootstrap_if_staffed()  # again, now holding the write lock
            self._db.execute(
                "INSERT INTO users (name, role, hash) VALUES (?, ?, ?)",
                (name, ADMINISTRATOR, hashed),
            )
        return User(name, ADMINISTRATOR)

    def _refuse_bootstrap_if_staffed(self) -> None:
        if self.count():
            raise AccessDenied(
                "accounts exist already: bootstrap only creates the first administrator of "
                "a new box; ask an administrator to add you (callveil users add)"
            )

    def add(self, name: str, role: str, password: str) -> User:
        check_role(role)
        hashed = self._hashed(check_name(name), password)
        try:
            with transaction(self._db):
                self._db.execute(
                    "INSERT INTO users (name, role, hash) VALUES (?, ?, ?)", (name, role, hashed)
                )
        except sqlite3.IntegrityError:
            raise VaultError(f"user {name!r} exists already; pick another name") from None
        return User(name, role)

    def set_password(self, name: str, password: str) -> None:
        """Replace ``name``'s password; also clears its wrong-password count and lock."""
        hashed = self._hashed(name, password)
        with transaction(self._db):
            updated = self._db.execute(
                "UPDATE users SET hash = ?, failures = 0, locked_until = 0 WHERE name = ?",
                (hashed, name),
            ).rowcount
        if not updated:
            raise VaultError(f"there is no user {name!r}; `callveil users list` shows them")

    def remove(self, name: str) -> None:
        """Delete an account; the last administrator cannot be removed."""
        with transaction(self._db):
            user = self.get(name)
            admins = self._db.execute(
                "SELECT count(*) FROM users WHERE role = ?", (ADMINISTRATOR,)
            ).fetchone()[0]
            if user.role == ADMINISTRATOR and admins == 1:
                raise VaultError(
                    f"{name!r} is the last administrator; add another administrator first"
                )
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))

    def authenticate(self, name: str, password: str) -> User:
        """The account, if ``password`` is right and the account is not locked.

        Raises AuthenticationError otherwise; a wrong password is counted before raising.
        """
        with transaction(self._db):  # one login at a time: parallel guesses cannot race the count
            row = self._db.execute(
                "SELECT role, hash, failures, locked_until FROM users WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                self._burn(password)
                raise AuthenticationError(_WRONG)
            role, hashed, failures, locked_until = row
            now = time.time()
            if locked_until > now:
                raise AuthenticationError(
                    f"account {name!r} is locked for {math.ceil(locked_until - now)} more seconds "
                    f"after {failures} wrong passwords; wait, or ask an administrator to set a "
                    "new one"
                )
            problem = self._verify(hashed, password)
            if problem is None:
                self._db.execute(
                    "UPDATE users SET failures = 0, locked_until = 0 WHERE name = ?", (name,)
                )
                if self._hasher.check_needs_rehash(hashed):
                    self._db.execute(
                        "UPDATE users SET hash = ? WHERE name = ?",
                        (self._hasher.hash(password), name),
                    )
                return User(name, role)
            failures += 1
            lock = self._limits.lockout(failures)
            self._db.execute(
                "UPDATE users SET failures = ?, locked_until = ? WHERE name = ?",
                (failures, now + lock if lock else 0, name),
            )
        # raised after the commit, so that the count survives
        suffix = f"; the account is now locked for {lock:g} seconds" if lock else ""
        raise AuthenticationError(problem + suffix)

    def _verify(self, hashed: str, password: str) -> str | None:
        try:
            self._hasher.verify(hashed, password)
        except VerifyMismatchError:
            return _WRONG
        except (InvalidHashError, VerificationError):
            return (
                "the account's stored password hash is damaged; an administrator must set a new "
                "password"
            )
        return None

    def _burn(self, password: str) -> None:
        # the work a real check would do, so timing does not tell unknown names apart
        if self._dummy is None:
            self._dummy = self._hasher.hash("not a password of anyone")
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy, password)

    def _hashed(self, name: str, password: str) -> str:
        return self._hasher.hash(check_password(name, password))
