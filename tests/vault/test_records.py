"""Record metadata validation and phase rules."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.vault.phases import PHASES, check_transition
from gateway.vault.records import VaultError, check_day, check_kind, check_period


@pytest.mark.parametrize("period", ["2026-11-29", "2026-W48", "2020-W53", "2024-02-29"])
def test_coarse_periods_are_accepted(period: str) -> None:
    assert check_period(period) == period


@pytest.mark.parametrize(
    ("period", "message"),
    [
        ("2026-11-29T10:00", "not a coarse period"),
        ("2026-11-29 10", "not a coarse period"),
        ("2026-11", "not a coarse period"),
        ("2026-11-29\n", "not a coarse period"),
        ("\uff12\uff10\uff12\uff16-11-29", "not a coarse period"),
        ("2026-02-30", "not a real day or week"),
        ("2026-W54", "not a real day or week"),
        ("2026-W00", "not a real day or week"),
        (20261129, "not a string"),
    ],
)
def test_fine_or_invalid_periods_are_refused(period: str, message: str) -> None:
    with pytest.raises(VaultError, match=message) as info:
        check_period(period)
    assert "YYYY-MM-DD" in str(info.value)


@settings(max_examples=300)
@given(st.text(max_size=20) | st.from_regex(r"[0-9]{4}-(W[0-9]{2}|[0-9]{2}-[0-9]{2})"))
def test_arbitrary_periods_raise_only_vault_error(period: str) -> None:
    with contextlib.suppress(VaultError):
        assert check_period(period) == period


def test_a_time_of_day_is_not_a_day() -> None:
    with pytest.raises(VaultError, match=r"expires must be a datetime\.date"):
        check_day(dt.datetime(2026, 11, 29, 10, 0), "expires")
    assert check_day(dt.date(2026, 11, 29), "expires") == dt.date(2026, 11, 29)


def test_kinds_per_partition() -> None:
    assert check_kind("analytics", "summary") == "summary"
    with pytest.raises(VaultError, match="contract partition holds no 'summary'"):
        check_kind("contract", "summary")


def test_analytics_phases_move_forward_only() -> None:
    path = ["collected", "processed", "analysed", "kept", "deleted"]
    for current, new in itertools.pairwise(path):
        check_transition("analytics", current, new)
    for i, current in enumerate(path):
        for new in path[: i + 1]:
            with pytest.raises(VaultError, match="cannot move from"):
                check_transition("analytics", current, new)


def test_contract_records_skip_processing_and_analysis() -> None:
    check_transition("contract", "collected", "kept")
    with pytest.raises(VaultError, match=r"allowed from 'collected': deleted, kept"):
        check_transition("contract", "collected", "processed")


@pytest.mark.parametrize("phase", PHASES[:-1])
def test_any_live_record_may_be_deleted(phase: str) -> None:
    check_transition("analytics", phase, "deleted")


def test_unknown_phases() -> None:
    with pytest.raises(VaultError, match="unknown phase 'archived'"):
        check_transition("analytics", "collected", "archived")
    with pytest.raises(VaultError, match="database was edited"):
        check_transition("contract", "analysed", "kept")
