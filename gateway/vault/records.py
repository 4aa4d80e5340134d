"""What a vault record says about itself: kept minimal, validated, and bound to its blob."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

Partition = Literal["analytics", "contract"]
PARTITIONS: tuple[Partition, ...] = ("analytics", "contract")

# Contract recordings are legal evidence kept whole; analytics holds what the pipeline derives.
KINDS: dict[str, frozenset[str]] = {
    "analytics": frozenset({"recording", "summary"}),
    "contract": frozenset({"recording"}),
}

ID_BYTES = 16
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})")
_CONTEXT_LABEL = b"callveil vault record v1\x00"


class VaultError(Exception):
    """A vault request cannot be served; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record's metadata: everything the vault shows without opening the record."""

    id: str
    partition: Partition
    kind: str
    period: str
    phase: str
    expires: dt.date


def check_partition(partition: str) -> Partition:
    if partition not in PARTITIONS:
        raise VaultError(f"unknown partition {partition!r}; use one of {', '.join(PARTITIONS)}")
    return partition  # type: ignore[return-value]


def check_kind(partition: Partition, kind: str) -> str:
    if kind not in KINDS[partition]:
        raise VaultError(
            f"the {partition} partition holds no {kind!r} records; "
            f"use one of {', '.join(sorted(KINDS[partition]))}"
        )
    return kind


def check_period(period: str) -> str:
    """``period`` if it is a day (YYYY-MM-DD) or an ISO week (YYYY-Www), else VaultError.

    Anything finer would let the stored metadata say when a call happened.
    """
    fix = "give a day (YYYY-MM-DD) or an ISO week (YYYY-Www), never a finer time"
    if not isinstance(period, str):
        raise VaultError(f"period {period!r} is not a string; {fix}")
    try:
        if _DAY.fullmatch(period):
            dt.date.fromisoformat(period)
            return period
        week = _WEEK.fullmatch(period)
        if week:
            dt.date.fromisocalendar(int(week[1]), int(week[2]), 1)
            return period
    except ValueError as exc:
        raise VaultError(f"period {period!r} is not a real day or week ({exc}); {fix}") from None
    raise VaultError(f"period {period!r} is not a coarse period; {fix}")


def check_day(day: dt.date, what: str) -> dt.date:
    # datetime is a date subclass: refuse it, a time of day is finer than the vault keeps
    if type(day) is not dt.date:
        raise VaultError(f"{what} must be a datetime.date (a day), not {type(day).__name__}")
    return day


def seal_context(record_id: bytes, partition: str, kind: str, period: str, expires: str) -> bytes:
    """The associated data a record's blob is sealed with.

    Binding the id stops blobs being swapped between rows; binding the fixed metadata stops a
    record being moved to another partition or given a later expiry. The phase changes over a
    record's life, so it is not bound. Fields are validated and never contain NUL.
    """
    fields = "\x00".join((partition, kind, period, expires)).encode("ascii")
    return _CONTEXT_LABEL + record_id + fields
