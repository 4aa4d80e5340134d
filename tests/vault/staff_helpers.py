"""Shared set-up for the staff-access tests: cheap password hashing and a staff of four."""

from __future__ import annotations

from pathlib import Path

from argon2 import PasswordHasher, profiles

from gateway.vault.users import RateLimit, Users

# Argon2id at its smallest cost: the tests exercise the logic, not the hashing cost.
CHEAP_HASHER = PasswordHasher.from_parameters(profiles.CHEAPEST)
STAFF = {
    "ada": "administrator",
    "ann": "analyst",
    "aud": "auditor",
    "lea": "legal",
}
PURPOSE = "quality review of billing calls"


def password(name: str) -> str:
    """A different password per user, none containing the user name."""
    return f"horse battery staple {sum(map(ord, name))}"


def open_users(path: Path, limits: RateLimit | None = None) -> Users:
    return Users(path, limits=limits, hasher=CHEAP_HASHER)


def staffed_users(path: Path) -> Users:
    """Accounts for every role: the administrator bootstraps, then adds the others."""
    users = open_users(path)
    users.bootstrap("ada", password("ada"))
    for name, role in STAFF.items():
        if name != "ada":
            users.add(name, role, password(name))
    return users
