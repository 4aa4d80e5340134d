"""How long each record type is kept, and the job that crypto-shreds what has expired.

A record's expiry is the Monday of the ISO week in which its configured retention ends, so
every record stored in one week expires on the same day and the expiry does not tell the day
a call was stored. Records are therefore kept for at most the configured number of days and
at least six days fewer (the configuration allows no less than a week).

The retention job runs without a staff login (a timer starts it): it can only destroy what
the configuration says must be destroyed, and it writes one audit entry with how many
records it shredded per partition, nothing per record.
"""

from __future__ import annotations

import datetime as dt

from gateway.config import VaultConfig
from gateway.vault.audit import DONE, FAILED, AuditEvent, AuditLog
from gateway.vault.records import PARTITIONS, VaultError, check_day, check_kind, check_partition
from gateway.vault.store import Vault

RETENTION_USER = "retention-job"
RETENTION_ROLE = "system"
RETENTION_ACTION = "retention"
RETENTION_PURPOSE = "the configured retention period ended"


def retention_days(config: VaultConfig, partition: str, kind: str) -> int:
    """The configured retention of a ``kind`` record in ``partition``, in days."""
    part = check_partition(partition)
    check_kind(part, kind)
    days: dict[tuple[str, str], int] = {
        ("analytics", "recording"): config.analytics_recording_days,
        ("analytics", "summary"): config.analytics_summary_days,
        ("contract", "recording"): config.contract_recording_days,
    }
    return days[part, kind]


def expiry_for(config: VaultConfig, partition: str, kind: str, today: dt.date) -> dt.date:
    """The expiry day of a ``kind`` record stored in ``partition`` on ``today``."""
    end = check_day(today, "today") + dt.timedelta(days=retention_days(config, partition, kind))
    return end - dt.timedelta(days=end.weekday())


def run_retention(vault: Vault, audit: AuditLog, today: dt.date) -> dict[str, int]:
    """Shred every record that expires ``today`` or earlier; returns how many per partition."""
    day = check_day(today, "today")
    due = {p: sum(1 for info in vault.list(p) if info.expires <= day) for p in PARTITIONS}
    try:
        shredded = vault.shred_expired(day)
    except VaultError as exc:
        audit.append(_event(FAILED, f"{_counts(due)} due; {exc}"))
        raise
    note = "" if shredded == sum(due.values()) else f" ({shredded} in all: some expired meanwhile)"
    audit.append(_event(DONE, f"shredded {_counts(due)}{note}"))
    return due


def _counts(per_partition: dict[str, int]) -> str:
    return ", ".join(f"{partition} {count}" for partition, count in per_partition.items())


def _event(outcome: str, reason: str) -> AuditEvent:
    return AuditEvent(
        RETENTION_USER, RETENTION_ROLE, RETENTION_ACTION, outcome, RETENTION_PURPOSE, reason=reason
    )
