"""Staff accounts: Argon2id hashes, persistent lockout, bootstrap, account rules."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gateway.vault.permissions import AccessDenied
from gateway.vault.records import VaultError
from gateway.vault.users import AuthenticationError, RateLimit, User, Users, production_hasher
from tests.vault.staff_helpers import open_users, password, staffed_users

LOCK = RateLimit(free_attempts=2, lockout_s=0.4, lockout_max_s=1.0)


def test_right_password_opens_the_account(tmp_path: Path) -> None:
    with staffed_users(tmp_path / "users.db") as users:
        assert users.authenticate("ann", password("ann")) == User("ann", "analyst")
        assert [u.role for u in users.list()] == ["administrator", "analyst", "auditor", "legal"]


def test_wrong_password_and_unknown_name_get_the_same_answer(tmp_path: Path) -> None:
    with staffed_users(tmp_path / "users.db") as users:
        with pytest.raises(AuthenticationError) as wrong:
            users.authenticate("ann", "not her password at all")
        with pytest.raises(AuthenticationError) as unknown:
            users.authenticate("nobody", "not her password at all")
        assert str(wrong.value) == str(unknown.value) == "wrong user name or password"


def test_lockout_grows_and_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    with staffed_users(path):
        pass
    with open_users(path, LOCK) as users:
        with pytest.raises(AuthenticationError, match=r"wrong user name or password$"):
            users.authenticate("ann", "guess guess guess")
        with pytest.raises(AuthenticationError, match=r"now locked for 0\.4 seconds"):
            users.authenticate("ann", "guess guess guess")
    with open_users(path, LOCK) as users:  # a new process: the lock is still there
        with pytest.raises(AuthenticationError, match="is locked for 1 more seconds after 2"):
            users.authenticate("ann", password("ann"))  # even the right password waits
        time.sleep(0.45)
        with pytest.raises(AuthenticationError, match=r"now locked for 0\.8 seconds"):
            users.authenticate("ann", "guess guess guess")
        failures, until = (
            sqlite3.connect(path)
            .execute("SELECT failures, locked_until FROM users WHERE name = 'ann'")
            .fetchone()
        )
        assert failures == 3 and 0.7 < until - time.time() <= 0.8
        time.sleep(0.85)
        assert users.authenticate("ann", password("ann")).role == "analyst"
        # a right password resets the count: one more wrong one locks nothing
        with pytest.raises(AuthenticationError, match=r"password$"):
            users.authenticate("ann", "guess guess guess")


def test_lockout_is_capped() -> None:
    limits = RateLimit(free_attempts=3, lockout_s=30, lockout_max_s=3600)
    assert [limits.lockout(n) for n in (2, 3, 4, 5, 10, 1000)] == [0, 30, 60, 120, 3600, 3600]


def test_new_password_clears_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    with staffed_users(path):
        pass
    with open_users(path, RateLimit(free_attempts=1, lockout_s=600, lockout_max_s=600)) as users:
        with pytest.raises(AuthenticationError, match="now locked for 600 seconds"):
            users.authenticate("lea", "guess guess guess")
        users.set_password("lea", "a fresh passphrase")
        assert users.authenticate("lea", "a fresh passphrase").role == "legal"


def test_bootstrap_only_on_an_empty_box(tmp_path: Path) -> None:
    with open_users(tmp_path / "users.db") as users:
        assert users.bootstrap("ada", password("ada")) == User("ada", "administrator")
        with pytest.raises(AccessDenied, match="accounts exist already"):
            users.bootstrap("eve", password("eve"))
        assert [u.name for u in users.list()] == ["ada"]


def test_account_rules(tmp_path: Path) -> None:
    with staffed_users(tmp_path / "users.db") as users:
        with pytest.raises(VaultError, match="12 to 1024 characters"):
            users.add("bob", "analyst", "short")
        with pytest.raises(VaultError, match="must not contain the user name"):
            users.add("bob", "analyst", "bob is my password")
        with pytest.raises(VaultError, match="not an e-mail address"):
            users.add("bob@example.com", "analyst", password("bob"))
        with pytest.raises(VaultError, match="unknown role 'root'"):
            users.add("bob", "root", password("bob"))
        with pytest.raises(VaultError, match="exists already"):
            users.add("ann", "legal", password("ann"))
        with pytest.raises(VaultError, match="last administrator"):
            users.remove("ada")
        users.add("adb", "administrator", password("adb"))
        users.remove("ada")
        with pytest.raises(VaultError, match="no user 'ada'"):
            users.remove("ada")


def test_damaged_hash_is_refused_not_crashed(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    with staffed_users(path):
        pass
    with sqlite3.connect(path) as con:
        con.execute("UPDATE users SET hash = 'not a hash' WHERE name = 'aud'")
    con.close()
    with open_users(path) as users, pytest.raises(AuthenticationError, match="damaged"):
        users.authenticate("aud", password("aud"))


def test_production_hash_is_argon2id_and_upgrades_cheap_hashes(tmp_path: Path) -> None:
    path = tmp_path / "users.db"
    with staffed_users(path):
        pass
    with Users(path, hasher=production_hasher()) as users:
        assert users.authenticate("ann", password("ann")).role == "analyst"
    stored = sqlite3.connect(path).execute("SELECT hash FROM users WHERE name = 'ann'").fetchone()
    assert stored[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    with Users(path, hasher=production_hasher()) as users:
        assert users.authenticate("ann", password("ann")).role == "analyst"
