"""Staff access: every request names a user, proves the password, states a purpose, and is
checked against the permission table; the verdict is in the audit log before anything opens.

Refusals raise AccessDenied (or its AuthenticationError) after they are logged. A granted
operation that then fails (a damaged record, say) is logged as failed too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn

from gateway.redact import redact_text
from gateway.seal.keyprovider import SealError
from gateway.vault.audit import FAILED, GRANTED, REFUSED, AuditEvent, AuditLog
from gateway.vault.permissions import (
    DELETE,
    LIST,
    PHASE,
    AccessDenied,
    permitted,
    roles_for,
)
from gateway.vault.phases import DELETED
from gateway.vault.records import ID_BYTES, PARTITIONS, RecordInfo, VaultError, check_partition
from gateway.vault.store import Vault
from gateway.vault.users import NAME_PATTERN, AuthenticationError, User, Users

MIN_PURPOSE = 12
MAX_PURPOSE = 300
_NOBODY = "-"  # the role logged before a user has proved who they are
_PURPOSE_EXAMPLE = "e.g. 'quality review of billing calls, ticket 4711'"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who asks (user, password) and why (purpose): required for every staff request."""

    user: str
    password: str
    purpose: str


def purpose_problem(purpose: str) -> tuple[str, str] | None:
    """None if ``purpose`` is an acceptable statement of purpose, else why not: a short reason
    for the audit log and the full message for the person."""
    text = purpose.strip()
    if len(text) < MIN_PURPOSE:
        return "purpose missing or too short", (
            f"state the purpose of this access in at least {MIN_PURPOSE} characters "
            f"({_PURPOSE_EXAMPLE})"
        )
    if len(text) > MAX_PURPOSE:
        return "purpose too long", f"state the purpose in at most {MAX_PURPOSE} characters"
    cleaned = redact_text(text)
    if cleaned != text:
        # the purpose goes into the audit log, which must hold no personal data
        return "purpose looked like it held personal data", (
            f"the purpose seems to contain personal data or an identifier (cleaned, it reads "
            f"{cleaned!r}); state it without phone numbers, addresses or ids ({_PURPOSE_EXAMPLE})"
        )
    return None


class Gate:
    """Checks purpose, password and permission, and logs every verdict."""

    def __init__(self, users: Users, audit: AuditLog) -> None:
        self.users = users
        self.audit = audit

    def authorize(
        self,
        cred: Credentials,
        action: str,
        *,
        partition: str | None = None,
        subject: str | None = None,
    ) -> User:
        """The user, if ``cred`` may do ``action``; else the refusal is logged and raised."""
        user = self.authenticate(cred, action, partition=partition, subject=subject)
        self.permit(user, cred, action, partition=partition, subject=subject)
        return user

    def authenticate(
        self,
        cred: Credentials,
        action: str,
        *,
        partition: str | None = None,
        subject: str | None = None,
    ) -> User:
        """Check the purpose and the password (rate-limited); log and raise a refusal."""
        name = cred.user if NAME_PATTERN.fullmatch(cred.user) else "<invalid name>"
        problem = purpose_problem(cred.purpose)
        if problem:
            # the rejected purpose is not logged: it may be what made it unacceptable
            reason, message = problem
            event = AuditEvent(name, _NOBODY, action, REFUSED, "", partition, subject, reason)
            self.audit.append(event)
            raise AccessDenied(message)
        try:
            return self.users.authenticate(name, cred.password)
        except AuthenticationError as exc:
            self.audit.append(
                AuditEvent(
                    name, _NOBODY, action, REFUSED, cred.purpose.strip(), partition, subject,
                    str(exc),
                )
            )  # fmt: skip
            raise

    def permit(
        self,
        user: User,
        cred: Credentials,
        action: str,
        *,
        partition: str | None = None,
        subject: str | None = None,
    ) -> None:
        """Log the grant if ``user``'s role may do ``action``, else log and raise a refusal."""
        if not permitted(user.role, action, partition):
            where = f" in the {partition} partition" if partition else ""
            allowed = ", ".join(roles_for(action, partition)) or "no role"
            self.refuse(
                user,
                cred,
                action,
                f"the {user.role} role may not {action}{where} (allowed: {allowed})",
                partition=partition,
                subject=subject,
            )
        self._log(user, cred, action, GRANTED, partition, subject, "")

    def refuse(
        self,
        user: User,
        cred: Credentials,
        action: str,
        reason: str,
        *,
        partition: str | None = None,
        subject: str | None = None,
    ) -> NoReturn:
        """Log a refusal of an authenticated user and raise it."""
        self._log(user, cred, action, REFUSED, partition, subject, reason)
        raise AccessDenied(reason)

    @contextmanager
    def performing(
        self,
        user: User,
        cred: Credentials,
        action: str,
        *,
        partition: str | None = None,
        subject: str | None = None,
    ) -> Iterator[None]:
        """Log a granted operation that then fails, and let the error through."""
        try:
            yield
        except (VaultError, SealError, OSError) as exc:
            self._log(user, cred, action, FAILED, partition, subject, str(exc))
            raise

    def _log(
        self,
        user: User,
        cred: Credentials,
        action: str,
        outcome: str,
        partition: str | None,
        subject: str | None,
        reason: str,
    ) -> None:
        self.audit.append(
            AuditEvent(
                user.name, user.role, action, outcome, cred.purpose.strip(), partition, subject,
                reason,
            )
        )  # fmt: skip


class VaultAccess:
    """The vault's operations for staff, each one authorized and logged through ``gate``."""

    def __init__(self, vault: Vault, gate: Gate) -> None:
        self._vault = vault
        self._gate = gate

    def list(self, cred: Credentials, partition: str) -> tuple[RecordInfo, ...]:
        part = check_partition(partition)
        user = self._gate.authorize(cred, LIST, partition=part)
        with self._gate.performing(user, cred, LIST, partition=part):
            return self._vault.list(part)

    def open(self, cred: Credentials, record_id: str, action: str) -> tuple[RecordInfo, bytes]:
        """A record's metadata and content, for ``action`` (play or export)."""
        user, info = self._authorize_record(cred, record_id, action)
        with self._gate.performing(user, cred, action, partition=info.partition, subject=info.id):
            return info, self._vault.get(info.id)

    def set_phase(self, cred: Credentials, record_id: str, phase: str) -> None:
        """Move a record forward; to ``deleted`` (crypto-shredding it) needs delete rights."""
        action = DELETE if phase == DELETED else PHASE
        user, info = self._authorize_record(cred, record_id, action)
        with self._gate.performing(user, cred, action, partition=info.partition, subject=info.id):
            self._vault.set_phase(info.id, phase)

    def delete(self, cred: Credentials, record_id: str) -> None:
        self.set_phase(cred, record_id, DELETED)

    def _authorize_record(
        self, cred: Credentials, record_id: str, action: str
    ) -> tuple[User, RecordInfo]:
        user = self._gate.authenticate(cred, action)
        info = self._locate(record_id)
        if info is None:
            # only an authenticated user learns whether a record exists
            shown = record_id if _is_record_id(record_id) else None
            self._gate.refuse(
                user,
                cred,
                action,
                "no such record (malformed id, never stored, or shredded); "
                "`callveil vault list` shows the ids",
                subject=shown,
            )
        self._gate.permit(user, cred, action, partition=info.partition, subject=info.id)
        return user, info

    def _locate(self, record_id: str) -> RecordInfo | None:
        if not _is_record_id(record_id):
            return None
        wanted = record_id.lower()
        for partition in PARTITIONS:
            for info in self._vault.list(partition):
                if info.id == wanted:
                    return info
        return None


def _is_record_id(text: str) -> bool:
    return len(text) == 2 * ID_BYTES and all(c in "0123456789abcdefABCDEF" for c in text)
