"""Staff access through the facade: the whole role matrix, purposes, passwords, and the audit
entry every request leaves behind."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.seal.envelope import Sealer
from gateway.seal.keyprovider import SealError
from gateway.seal.softkey import SoftwareKeyProvider
from gateway.vault.access import Credentials, Gate, VaultAccess
from gateway.vault.audit import AuditLog
from gateway.vault.permissions import (
    AUDIT_EXPORT,
    AUDIT_VERIFY,
    OWN_PASSWORD,
    USERS_LIST,
    USERS_MANAGE,
    AccessDenied,
)
from gateway.vault.store import Vault
from gateway.vault.users import AuthenticationError, RateLimit
from tests.vault.conftest import software_provider
from tests.vault.staff_helpers import PURPOSE, STAFF, open_users, password, staffed_users

EXPIRES = dt.date(2027, 1, 4)
CONTENT = {"recording": b"RIFF anonymized recording bytes", "summary": b'{"tension": 0.2}'}
NEXT_PHASE = {"analytics": "processed", "contract": "kept"}

# The permission table as the task states it, written out independently of the code.
ALLOWED = {
    ("administrator", "list", "analytics"),
    ("administrator", "list", "contract"),
    ("administrator", "delete", "analytics"),
    ("administrator", "delete", "contract"),
    ("analyst", "list", "analytics"),
    ("analyst", "play", "analytics"),
    ("analyst", "export", "analytics"),
    ("analyst", "phase", "analytics"),
    ("legal", "list", "contract"),
    ("legal", "play", "contract"),
    ("legal", "export", "contract"),
    ("legal", "phase", "contract"),
    ("auditor", "list", "analytics"),
    ("auditor", "list", "contract"),
}
BOX_ALLOWED = {
    (AUDIT_VERIFY, "administrator"),
    (AUDIT_VERIFY, "auditor"),
    (AUDIT_EXPORT, "auditor"),
    (USERS_LIST, "administrator"),
    (USERS_LIST, "auditor"),
    (USERS_MANAGE, "administrator"),
    *((OWN_PASSWORD, role) for role in STAFF.values()),
}
NAME_OF = {role: name for name, role in STAFF.items()}


@pytest.fixture(scope="module")
def box_key(tmp_path_factory: pytest.TempPathFactory) -> SoftwareKeyProvider:
    return software_provider(tmp_path_factory.mktemp("access-key") / "box.key")


@dataclass
class Staff:
    vault: Vault
    gate: Gate
    access: VaultAccess
    audit: AuditLog
    db: Path

    def entries(self) -> list[dict]:
        return [json.loads(e.body) for e in self.audit.entries()]

    def put(self, partition: str, kind: str = "recording") -> str:
        return self.vault.put(
            kind, CONTENT[kind], partition=partition, period="2026-W48", expires=EXPIRES
        )


@pytest.fixture
def staff(tmp_path: Path, sealers: dict[str, Sealer], box_key) -> Iterator[Staff]:
    db = tmp_path / "vault.db"
    with (
        Vault(db, sealers) as vault,
        staffed_users(tmp_path / "users.db") as users,
        AuditLog(tmp_path / "audit.db", box_key, sign_every=10) as audit,
    ):
        gate = Gate(users, audit)
        yield Staff(vault, gate, VaultAccess(vault, gate), audit, db)


def cred(name: str, purpose: str = PURPOSE, secret: str | None = None) -> Credentials:
    return Credentials(name, password(name) if secret is None else secret, purpose)


def attempt(staff: Staff, role: str, action: str, partition: str) -> tuple[str, object]:
    """Do ``action`` as ``role``; returns the record id involved and the result."""
    who = cred(NAME_OF[role])
    if action == "list":
        record = staff.put(partition)
        return record, staff.access.list(who, partition)
    record = staff.put(partition)
    if action in ("play", "export"):
        return record, staff.access.open(who, record, action)
    if action == "phase":
        return record, staff.access.set_phase(who, record, NEXT_PHASE[partition])
    return record, staff.access.delete(who, record)


@pytest.mark.parametrize("partition", ["analytics", "contract"])
@pytest.mark.parametrize("action", ["list", "play", "export", "phase", "delete"])
@pytest.mark.parametrize("role", ["administrator", "analyst", "auditor", "legal"])
def test_role_matrix(staff: Staff, role: str, action: str, partition: str) -> None:
    allowed = (role, action, partition) in ALLOWED
    before = len(staff.entries())
    if allowed:
        record, result = attempt(staff, role, action, partition)
    else:
        with pytest.raises(AccessDenied, match=f"the {role} role may not {action}") as refused:
            attempt(staff, role, action, partition)
        record = staff.vault.list(partition)[-1].id
        assert "allowed:" in str(refused.value)
    [entry] = staff.entries()[before:]
    assert entry["user"] == NAME_OF[role] and entry["role"] == role
    assert entry["action"] == action and entry["partition"] == partition
    assert entry["purpose"] == PURPOSE
    assert entry["outcome"] == ("granted" if allowed else "refused")
    assert entry["subject"] == (None if action == "list" else record)
    infos = {info.id: info for info in staff.vault.list(partition)}
    if allowed and action == "list":
        assert record in {info.id for info in result}  # type: ignore[attr-defined]
    elif allowed and action in ("play", "export"):
        assert result[1] == CONTENT["recording"]  # type: ignore[index]
    elif allowed and action == "phase":
        assert infos[record].phase == NEXT_PHASE[partition]
    elif allowed:
        assert record not in infos
    else:
        assert infos[record].phase == "collected"  # a refusal changes nothing


@pytest.mark.parametrize("action", [AUDIT_VERIFY, AUDIT_EXPORT, USERS_LIST, USERS_MANAGE])
@pytest.mark.parametrize("role", ["administrator", "analyst", "auditor", "legal"])
def test_box_action_matrix(staff: Staff, role: str, action: str) -> None:
    if (action, role) in BOX_ALLOWED:
        assert staff.gate.authorize(cred(NAME_OF[role]), action).role == role
    else:
        with pytest.raises(AccessDenied, match=f"the {role} role may not {action}"):
            staff.gate.authorize(cred(NAME_OF[role]), action)
    entry = staff.entries()[-1]
    assert (entry["user"], entry["action"]) == (NAME_OF[role], action)
    assert entry["outcome"] == ("granted" if (action, role) in BOX_ALLOWED else "refused")


@pytest.mark.parametrize("purpose", ["", "   ", "because", "x" * 301])
def test_a_purpose_is_required(staff: Staff, purpose: str) -> None:
    record = staff.put("analytics")
    with pytest.raises(AccessDenied, match="purpose"):
        staff.access.open(cred("ann", purpose), record, "play")
    entry = staff.entries()[-1]
    assert entry["outcome"] == "refused" and entry["purpose"] == ""
    assert entry["reason"].startswith("purpose")


@pytest.mark.parametrize(
    "purpose",
    [
        "callback to +39 06 1234 5678 about billing",
        "review of call from sip:mario.rossi@example.it",
        "check the calls that came from 192.0.2.17",
        "customer mario.rossi@example.it complained",
    ],
)
def test_a_purpose_with_personal_data_is_refused_and_not_stored(staff: Staff, purpose) -> None:
    record = staff.put("analytics")
    with pytest.raises(AccessDenied, match="personal data") as refused:
        staff.access.open(cred("ann", purpose), record, "play")
    assert "<" in str(refused.value)  # shows the person what was recognised, redacted
    staff.audit.close()
    stored = b"".join(p.read_bytes() for p in staff.db.parent.glob("audit.db*"))
    for fragment in ("1234 5678", "mario.rossi", "192.0.2.17"):
        assert fragment.encode() not in stored


def test_wrong_password_is_refused_logged_and_locks(tmp_path: Path, sealers, box_key) -> None:
    with staffed_users(tmp_path / "users.db"):
        pass
    limits = RateLimit(free_attempts=2, lockout_s=600, lockout_max_s=600)
    with (
        Vault(tmp_path / "vault.db", sealers) as vault,
        open_users(tmp_path / "users.db", limits) as users,
        AuditLog(tmp_path / "audit.db", box_key) as audit,
    ):
        access = VaultAccess(vault, Gate(users, audit))
        for _ in range(2):
            with pytest.raises(AuthenticationError):
                access.list(cred("aud", secret="wrong guess, twice"), "analytics")
        with pytest.raises(AuthenticationError, match="is locked"):
            access.list(cred("aud"), "analytics")
        reasons = [json.loads(e.body)["reason"] for e in audit.entries()]
    assert reasons[0] == "wrong user name or password"
    assert "now locked for 600 seconds" in reasons[1]
    assert "is locked" in reasons[2]


def test_only_a_logged_in_user_learns_whether_a_record_exists(staff: Staff) -> None:
    missing = "ab" * 16
    with pytest.raises(AuthenticationError):
        staff.access.open(cred("ann", secret="not the password"), missing, "play")
    with pytest.raises(AccessDenied, match="no such record"):
        staff.access.open(cred("ann"), missing, "play")
    assert staff.entries()[-1]["subject"] == missing
    with pytest.raises(AccessDenied, match="no such record"):
        staff.access.open(cred("ann"), "../../etc/passwd", "play")
    assert staff.entries()[-1]["subject"] is None  # arbitrary text never reaches the log


def test_a_granted_read_of_a_damaged_record_is_logged_as_failed(staff: Staff) -> None:
    record = staff.put("analytics")
    con = sqlite3.connect(staff.db)
    with con:
        key = (bytes.fromhex(record),)
        blob = bytearray(con.execute("SELECT blob FROM records WHERE id = ?", key).fetchone()[0])
        blob[40] ^= 0x01  # one flipped bit in the wrapped data key
        con.execute("UPDATE records SET blob = ? WHERE id = ?", (bytes(blob), *key))
    con.close()
    with pytest.raises(SealError, match="failed authentication"):
        staff.access.open(cred("ann"), record, "export")
    granted, failed = staff.entries()[-2:]
    assert (granted["outcome"], failed["outcome"]) == ("granted", "failed")
    assert "nothing was decrypted" in failed["reason"]
