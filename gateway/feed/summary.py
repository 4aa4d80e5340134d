"""The dashboard's summary: the feed's merged buckets per site, queue and period, and liveness.

It reads the tables ``store.py`` writes (through its own read-only connection, so the feed
never waits for a page) and keeps their meaning: a withheld cell is ``null``, never zero, and
``hidden`` says how many boxes withheld it (a non-null count is then a lower bound). A bucket
every box withheld (fewer than ``k`` analysed calls) carries no numbers at all. Liveness is
each box's last retained status: online, offline, or unknown for a registered box never heard
from. Nothing here holds a time finer than a bucket's period label.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gateway.aggregates.period import last_day

SCHEMA = "callveil/dashboard-summary/v1"
DEFAULT_PERIODS = 30
MAX_PERIODS = 366
_DISTRIBUTIONS = ("tension", "trend", "coverage", "duration", "silence", "overtalk")
_ROLES = ("operator", "customer")

# the newest ``?`` periods of each (site, queue)
_LATEST = """WITH latest AS (
    SELECT *, row_number() OVER (PARTITION BY site, queue ORDER BY period DESC) AS age
    FROM merged)"""
_BUCKETS = f"""{_LATEST}
    SELECT l.site, l.queue, l.period, l.boxes, l.suppressed_boxes, l.noisy_boxes,
        l.calls_seen, l.calls_analysed, r.sampling_rate, r.tension_rate, r.tension_hidden,
        (SELECT max(json_extract(b.body, '$.privacy.k')) FROM buckets b
            WHERE b.site = l.site AND b.queue = l.queue AND b.period = l.period)
    FROM latest l JOIN rates r
        ON r.site = l.site AND r.queue = l.queue AND r.period = l.period
    WHERE l.age <= ?"""
_CELLS = f"""{_LATEST}
    SELECT c.site, c.queue, c.period, c.histogram, c.label, c.count, c.hidden
    FROM merged_cells c JOIN latest l
        ON l.site = c.site AND l.queue = c.queue AND l.period = c.period
    WHERE l.age <= ? ORDER BY c.site, c.queue, c.period, c.histogram, c.cell"""


def open_reader(path: Path) -> sqlite3.Connection:
    """A read-only connection to the feed's database at ``path``."""
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)


def _rate(value: float | None) -> float | None:
    # noise can push a derived rate a little outside [0, 1]
    return None if value is None else round(min(max(value, 0.0), 1.0), 4)


def _count(count: int, hidden: int) -> int | None:
    # a published count is at least k, so a merged zero with a withheld part is all withheld
    return None if count == 0 and hidden else count


def _histogram(cells: list[tuple[str, int, int]]) -> dict[str, list[Any]]:
    return {
        "labels": [label for label, _, _ in cells],
        "counts": [_count(count, hidden) for _, count, hidden in cells],
        "hidden": [hidden for _, _, hidden in cells],
    }


def _contents(histograms: dict[str, list[tuple[str, int, int]]]) -> dict[str, Any]:
    """The bucket's histograms, grouped as the dashboard shows them."""
    out: dict[str, Any] = {name: None for name in _DISTRIBUTIONS}
    emotions: dict[str, dict[str, Any]] = {role: {} for role in _ROLES}
    topics: dict[str, dict[str, int | None]] = {}
    for name, cells in histograms.items():
        kind, _, rest = name.partition(".")
        if name in _DISTRIBUTIONS:
            out[name] = _histogram(cells)
        elif kind == "emotion":
            role, _, emotion = rest.partition(".")
            emotions.setdefault(role, {})[emotion] = _histogram(cells)
        elif kind == "topic":
            # "yes": the calls that mentioned the topic (a body without one is not shown)
            for label, count, hidden in cells:
                if label == "yes":
                    topics[rest] = {"calls": _count(count, hidden), "hidden": hidden}
    # neutral, the baseline, first (the feed leaves the models' module and numpy out)
    emotions = {
        role: dict(sorted(by_name.items(), key=lambda e: (e[0] != "neutral", e[0])))
        for role, by_name in emotions.items()
    }
    return {**out, "emotions": emotions, "topics": topics}


def _boxes(db: sqlite3.Connection, registered: Iterable[str]) -> list[dict[str, Any]]:
    boxes = [
        {"box": box, "site": site, "state": state, "release": release, "alarms": json.loads(alarms)}
        for box, site, state, release, alarms in db.execute(
            "SELECT box, site, state, release, alarms FROM status ORDER BY site, box"
        )
    ]
    heard = {b["box"] for b in boxes}
    boxes.extend(
        {"box": box, "site": None, "state": "unknown", "release": None, "alarms": []}
        for box in sorted(set(registered) - heard)
    )
    return boxes


def summary(
    db: sqlite3.Connection, *, periods: int = DEFAULT_PERIODS, registered: Iterable[str] = ()
) -> dict[str, Any]:
    """The newest ``periods`` buckets of each site and queue, oldest period first, and the
    boxes' liveness; ``registered`` boxes never heard from are listed as "unknown"."""
    if not 1 <= periods <= MAX_PERIODS:
        raise ValueError(f"periods must be from 1 to {MAX_PERIODS}, got {periods}")
    cells: dict[tuple[str, str, str], dict[str, list[tuple[str, int, int]]]] = {}
    for site, queue, period, name, label, count, hidden in db.execute(_CELLS, (periods,)):
        cells.setdefault((site, queue, period), {}).setdefault(name, []).append(
            (label, count, hidden)
        )
    buckets = []
    for row in db.execute(_BUCKETS, (periods,)):
        site, queue, period, boxes, withheld_boxes, noisy, seen, analysed = row[:8]
        sampling, tension, tension_hidden, k = row[8:]
        withheld = withheld_boxes == boxes
        buckets.append(
            {
                "site": site,
                "queue": queue or None,
                "period": period,
                "boxes": boxes,
                "withheld_boxes": withheld_boxes,
                "noisy_boxes": noisy,
                "k": k,
                "withheld": withheld,
                "calls_seen": None if withheld else seen,
                "calls_analysed": None if withheld else analysed,
                "sampling_rate": None if withheld else _rate(sampling),
                "tension_rate": None if withheld or tension_hidden else _rate(tension),
                **_contents(cells.get((site, queue, period), {})),
            }
        )
    buckets.sort(key=lambda b: (last_day(b["period"]), b["period"], b["site"], b["queue"] or ""))
    return {
        "schema": SCHEMA,
        "periods_per_series": periods,
        "buckets": buckets,
        "boxes": _boxes(db, registered),
    }
