"""Who may do what: staff roles and the permission table, least privilege throughout.

- **analyst** works on the analytics partition: lists it, plays or exports its anonymized
  recordings and summaries, moves its records through their phases. Nothing in the contract
  partition, nothing about accounts or the log.
- **legal** is the same for the contract partition only: contract recordings are unanonymized
  evidence, so the people who analyse quality never reach them, and vice versa.
- **auditor** checks the controls: verifies and exports the audit log, lists record metadata
  of both partitions and the staff accounts, but opens no record content.
- **administrator** runs the box: manages accounts, deletes records early (an erasure request)
  in either partition, verifies the log, but opens no record content.

Who reads cannot destroy and who destroys cannot read, so no single account can both take a
recording and erase its trace; and nobody can edit the audit log, which only grows.
"""

from __future__ import annotations

from typing import Final

from gateway.vault.records import PARTITIONS, VaultError

ADMINISTRATOR = "administrator"
ANALYST = "analyst"
AUDITOR = "auditor"
LEGAL = "legal"
ROLES: Final = (ADMINISTRATOR, ANALYST, AUDITOR, LEGAL)

# Actions on records (checked per partition).
LIST = "list"
PLAY = "play"
EXPORT = "export"
PHASE = "phase"
DELETE = "delete"

# Actions on the box (no partition).
AUDIT_VERIFY = "audit-verify"
AUDIT_EXPORT = "audit-export"
USERS_LIST = "users-list"
USERS_MANAGE = "users-manage"  # add, remove, or set another account's password
OWN_PASSWORD = "own-password"


class AccessDenied(VaultError):
    """A staff request was refused (and logged); the message says why and what to do."""


_BOTH = frozenset(PARTITIONS)
_ANALYTICS = frozenset({"analytics"})
_CONTRACT = frozenset({"contract"})
_BOX = frozenset({None})

_TABLE: Final[dict[str, dict[str, frozenset[str | None]]]] = {
    ADMINISTRATOR: {
        LIST: _BOTH,
        DELETE: _BOTH,
        AUDIT_VERIFY: _BOX,
        USERS_LIST: _BOX,
        USERS_MANAGE: _BOX,
        OWN_PASSWORD: _BOX,
    },
    ANALYST: {
        LIST: _ANALYTICS,
        PLAY: _ANALYTICS,
        EXPORT: _ANALYTICS,
        PHASE: _ANALYTICS,
        OWN_PASSWORD: _BOX,
    },
    LEGAL: {
        LIST: _CONTRACT,
        PLAY: _CONTRACT,
        EXPORT: _CONTRACT,
        PHASE: _CONTRACT,
        OWN_PASSWORD: _BOX,
    },
    AUDITOR: {
        LIST: _BOTH,
        AUDIT_VERIFY: _BOX,
        AUDIT_EXPORT: _BOX,
        USERS_LIST: _BOX,
        OWN_PASSWORD: _BOX,
    },
}


def permitted(role: str, action: str, partition: str | None = None) -> bool:
    """Whether ``role`` may do ``action`` (on ``partition``, for record actions)."""
    return partition in _TABLE.get(role, {}).get(action, frozenset())


def roles_for(action: str, partition: str | None = None) -> tuple[str, ...]:
    """The roles that may do ``action`` on ``partition``, in ROLES order."""
    return tuple(role for role in ROLES if permitted(role, action, partition))
