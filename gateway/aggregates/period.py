"""Periods: the coarsest time a published aggregate carries (a day or an ISO week)."""

from __future__ import annotations

import datetime as dt
import re

PERIODS = ("day", "week")
_DAY = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")


def period_of(day: dt.date, period: str) -> str:
    """The label of the ``period`` ("day" or "week") that contains ``day``."""
    if period == "day":
        return day.isoformat()
    if period == "week":
        year, week, _ = day.isocalendar()
        return f"{year:04d}-W{week:02d}"
    raise ValueError(f"unknown period {period!r}; use one of {', '.join(PERIODS)}")


def last_day(label: str) -> dt.date:
    """The last day of the period ``label``; ValueError if it is not a period label."""
    try:
        if _DAY.fullmatch(label):
            return dt.date.fromisoformat(label)
        match = _WEEK.fullmatch(label)
        if match:
            return dt.date.fromisocalendar(int(match[1]), int(match[2]), 7)
    except ValueError:
        pass
    raise ValueError(f"{label!r} is not a period label (YYYY-MM-DD or YYYY-Www)")


def is_closed(label: str, today: dt.date) -> bool:
    """True once ``today`` lies after every day of the period ``label``."""
    return today > last_day(label)
