"""Retention: expiry days from the configuration, and the job that shreds and logs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from gateway.config import VaultConfig, parse_config
from gateway.seal.envelope import Sealer
from gateway.vault.audit import AuditLog
from gateway.vault.records import VaultError
from gateway.vault.register import render_register
from gateway.vault.retention import expiry_for, retention_days, run_retention
from gateway.vault.store import Vault
from tests.vault.conftest import software_provider

SETTINGS = VaultConfig(
    analytics_recording_days=30, analytics_summary_days=400, contract_recording_days=3653
)
TYPES = [
    ("analytics", "recording", 30),
    ("analytics", "summary", 400),
    ("contract", "recording", 3653),
]


@pytest.mark.parametrize(("partition", "kind", "days"), TYPES)
def test_expiry_is_a_monday_within_the_last_week_of_retention(partition, kind, days) -> None:
    assert retention_days(SETTINGS, partition, kind) == days
    start = dt.date(2026, 11, 23)  # a Monday
    expiries = set()
    for offset in range(14):
        today = start + dt.timedelta(days=offset)
        expires = expiry_for(SETTINGS, partition, kind, today)
        assert expires.weekday() == 0
        assert today + dt.timedelta(days=days - 6) <= expires <= today + dt.timedelta(days=days)
        expiries.add(expires)
    # fourteen consecutive days of storing give at most three expiry days (weeks)
    assert len(expiries) <= 3


def test_expiry_refuses_unknown_types_and_times() -> None:
    with pytest.raises(VaultError, match="no 'summary' records"):
        expiry_for(SETTINGS, "contract", "summary", dt.date(2026, 1, 1))
    with pytest.raises(VaultError, match="not datetime"):
        expiry_for(SETTINGS, "analytics", "summary", dt.datetime(2026, 1, 1, 12, 0))


def test_retention_run_shreds_expired_records_and_logs_counts(
    tmp_path: Path, sealers: dict[str, Sealer]
) -> None:
    today = dt.date(2026, 12, 7)
    provider = software_provider(tmp_path / "box.key")
    with (
        Vault(tmp_path / "vault.db", sealers) as vault,
        AuditLog(tmp_path / "audit.db", provider) as audit,
    ):
        expired = [
            vault.put("recording", b"a", partition="analytics", period="2026-W40", expires=today),
            vault.put("summary", b"b", partition="analytics", period="2026-W40", expires=today),
            vault.put(
                "recording",
                b"c",
                partition="contract",
                period="2016-W40",
                expires=dt.date(2026, 1, 5),
            ),
        ]
        kept = vault.put(
            "recording",
            b"d",
            partition="analytics",
            period="2026-W49",
            expires=expiry_for(SETTINGS, "analytics", "recording", today),
        )
        assert run_retention(vault, audit, today) == {"analytics": 2, "contract": 1}
        remaining = [info.id for p in ("analytics", "contract") for info in vault.list(p)]
        assert remaining == [kept]
        assert run_retention(vault, audit, today) == {"analytics": 0, "contract": 0}
        entries = [json.loads(e.body) for e in audit.entries()]
        assert audit.verify().ok
    first = entries[0]
    assert (first["user"], first["role"], first["action"], first["outcome"]) == (
        "retention-job",
        "system",
        "retention",
        "done",
    )
    assert first["reason"] == "shredded analytics 2, contract 1"
    assert first["subject"] is None and first["partition"] is None
    text = json.dumps(entries)
    assert not any(record in text for record in expired)  # nothing per record


def test_register_states_every_period_and_role(tmp_path: Path) -> None:
    config = parse_config(
        {
            "privacy": {"sample_rate": 0.15, "trim_seconds": 8.0},
            "vault": {
                "analytics_recording_days": 45,
                "analytics_summary_days": 400,
                "contract_recording_days": 3660,
                "path": "/srv/cv/vault.db",
            },
            "contract": {"rules": [{"kind": "queue", "pattern": "^sales-close$"}]},
        }
    )
    text = render_register(config, tmp_path / "box.toml")
    for days in (45, 400, 3660):
        assert f"{days} days at most" in text
    for role in ("administrator", "analyst", "auditor", "legal"):
        assert role in text
    assert "about 15%" in text and "first 8 s" in text
    assert "queue matches '^sales-close$'" in text
    assert "/srv/cv/vault.db" in text
    blocks = [" ".join(block.split()) for block in text.split("\n\n")]
    analytics = next(b for b in blocks if "Anonymized call recording (" in b)
    contract = next(b for b in blocks if "Contract recording (" in b)
    assert "play: analyst; export: analyst;" in analytics
    assert "play: legal; export: legal;" in contract
    assert "delete early: administrator" in analytics and "delete early: administrator" in contract
    assert "phases: collected -> kept -> deleted" in contract
    assert all(len(line) <= 100 for line in text.splitlines())
