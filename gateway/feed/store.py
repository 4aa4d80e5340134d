"""The central store: what each box sent, per-box sequence bookkeeping, and merged buckets.

SQLite, one transaction per payload. ``received`` remembers every (box, sequence number)
seen, which tells a replay from a new payload and lists the gaps; ``buckets`` keeps each
box's published body per (site, queue, period); ``merged`` and ``merged_cells`` hold their
exact merge, rebuilt from the per-box bodies whenever one arrives, so duplicates and the
order of arrival change nothing. A merged cell's ``hidden`` says how many boxes withheld it:
its ``count`` is then a lower bound. The ``rates`` view derives rates at read time.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from dataclasses import dataclass
from functools import reduce
from pathlib import Path
from typing import Any

from gateway.aggregates.bucket import Bucket, merge
from gateway.aggregates.release import bucket_of
from gateway.closing import Closing
from gateway.feed.verify import Received

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS received (
        box TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (box, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS buckets (
        site TEXT NOT NULL, queue TEXT NOT NULL, period TEXT NOT NULL, box TEXT NOT NULL,
        seq INTEGER NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (site, queue, period, box)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS merged (
        site TEXT NOT NULL, queue TEXT NOT NULL, period TEXT NOT NULL,
        boxes INTEGER NOT NULL, suppressed_boxes INTEGER NOT NULL, noisy_boxes INTEGER NOT NULL,
        calls_seen INTEGER NOT NULL, calls_analysed INTEGER NOT NULL,
        PRIMARY KEY (site, queue, period)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS merged_cells (
        site TEXT NOT NULL, queue TEXT NOT NULL, period TEXT NOT NULL,
        histogram TEXT NOT NULL, cell INTEGER NOT NULL, label TEXT NOT NULL,
        count INTEGER NOT NULL, hidden INTEGER NOT NULL,
        PRIMARY KEY (site, queue, period, histogram, cell)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS status (
        box TEXT PRIMARY KEY NOT NULL, site TEXT NOT NULL, state TEXT NOT NULL,
        session INTEGER NOT NULL, release TEXT NOT NULL, key_fingerprint TEXT NOT NULL,
        alarms TEXT NOT NULL
    ) WITHOUT ROWID""",
    """CREATE VIEW IF NOT EXISTS rates AS
        SELECT m.site, m.queue, m.period,
            CAST(m.calls_analysed AS REAL) / NULLIF(m.calls_seen, 0) AS sampling_rate,
            1.0 - CAST(t.count AS REAL) / NULLIF(m.calls_analysed, 0) AS tension_rate,
            t.hidden AS tension_hidden
        FROM merged m LEFT JOIN merged_cells t
            ON t.site = m.site AND t.queue = m.queue AND t.period = m.period
            AND t.histogram = 'tension' AND t.label = 'none'""",
)
CSV_FIELDS = (
    "site",
    "queue",
    "period",
    "histogram",
    "cell",
    "label",
    "count",
    "hidden",
    "boxes",
    "suppressed_boxes",
    "noisy_boxes",
)


@dataclass(frozen=True, slots=True)
class SeqOutcome:
    duplicate: bool
    missing: tuple[int, ...]  # sequence numbers below the highest seen that never arrived
    filled_gap: bool  # this one had been missing


class FeedStore(Closing):
    """The SQLite file at ``path``; written from one thread at a time."""

    def __init__(self, path: Path, *, csv_path: Path | None = None) -> None:
        self._csv_path = csv_path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        except sqlite3.Error as exc:
            raise OSError(f"{path} is not a usable feed database ({exc})") from None

    def record_seq(self, box: str, seq: int) -> SeqOutcome:
        """Note that ``box`` sent ``seq``; report a replay and the gaps now known."""
        before = self._db.execute("SELECT max(seq) FROM received WHERE box = ?", (box,))
        highest = before.fetchone()[0] or 0
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO received (box, seq) VALUES (?, ?)", (box, seq)
        ).rowcount
        if not inserted:
            return SeqOutcome(True, self.missing(box), False)
        return SeqOutcome(False, self.missing(box), seq < highest)

    def missing(self, box: str) -> tuple[int, ...]:
        seen = {s for (s,) in self._db.execute("SELECT seq FROM received WHERE box = ?", (box,))}
        return tuple(s for s in range(1, max(seen, default=0)) if s not in seen)

    def add_bucket(self, received: Received) -> str:
        """Store a box's bucket and re-merge its (site, queue, period).

        Returns "new", "duplicate" (the same body again) or "conflict" (another body for a
        bucket already stored; the first is kept).
        """
        body = received.body
        bucket_of(body)  # refuses a malformed body before anything is stored
        key = (received.site, body.get("queue") or "", body["period"], received.box)
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT body FROM buckets WHERE site = ? AND queue = ? AND period = ? AND box = ?",
                key,
            ).fetchone()
            if row is not None:
                self._db.execute("COMMIT")
                return "duplicate" if row[0] == text else "conflict"
            self._db.execute(
                "INSERT INTO buckets (site, queue, period, box, seq, body) VALUES (?,?,?,?,?,?)",
                (*key, received.seq, text),
            )
            self._remerge(*key[:3])
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        if self._csv_path is not None:
            self.export_csv(self._csv_path)
        return "new"

    def _remerge(self, site: str, queue: str, period: str) -> None:
        bodies = [
            json.loads(text)
            for (text,) in self._db.execute(
                "SELECT body FROM buckets WHERE site = ? AND queue = ? AND period = ?",
                (site, queue, period),
            )
        ]
        buckets = [b for b in map(bucket_of, bodies) if b is not None]
        total = reduce(merge, buckets, Bucket())
        where = (site, queue, period)
        self._db.execute("DELETE FROM merged WHERE site = ? AND queue = ? AND period = ?", where)
        self._db.execute(
            "DELETE FROM merged_cells WHERE site = ? AND queue = ? AND period = ?", where
        )
        self._db.execute(
            "INSERT INTO merged VALUES (?,?,?,?,?,?,?,?)",
            (
                *where,
                len(bodies),
                len(bodies) - len(buckets),
                sum(b["privacy"]["noise"] is not None for b in bodies),
                total.calls_seen,
                total.calls_analysed,
            ),
        )
        self._db.executemany(
            "INSERT INTO merged_cells VALUES (?,?,?,?,?,?,?,?)",
            [
                (*where, name, i, label, count, hidden)
                for name, hist in total.histograms.items()
                for i, (label, count, hidden) in enumerate(
                    zip(hist.labels, hist.counts, hist.hidden, strict=True)
                )
            ],
        )

    def set_status(self, received: Received) -> None:
        """Keep the box's latest status (its sequence number is the connection session)."""
        body = received.body
        self._db.execute(
            # a newer session's message wins; within one session the later one
            """INSERT INTO status VALUES (?,?,?,?,?,?,?) ON CONFLICT (box) DO UPDATE SET
                site = excluded.site, state = excluded.state, session = excluded.session,
                release = excluded.release, key_fingerprint = excluded.key_fingerprint,
                alarms = excluded.alarms
                WHERE excluded.session >= status.session""",
            (
                received.box,
                received.site,
                str(body.get("state")),
                received.seq,
                str(body.get("release")),
                str(body.get("key_fingerprint")),
                json.dumps(body.get("alarms", [])),
            ),
        )

    def merged(self, site: str, period: str, queue: str | None = None) -> dict[str, Any] | None:
        """The merged bucket of ``site`` and ``period`` as a plain dict, or None."""
        where = (site, queue or "", period)
        row = self._db.execute(
            "SELECT boxes, suppressed_boxes, noisy_boxes, calls_seen, calls_analysed FROM merged"
            " WHERE site = ? AND queue = ? AND period = ?",
            where,
        ).fetchone()
        if row is None:
            return None
        histograms: dict[str, dict[str, list[Any]]] = {}
        for name, label, count, hidden in self._db.execute(
            "SELECT histogram, label, count, hidden FROM merged_cells"
            " WHERE site = ? AND queue = ? AND period = ? ORDER BY histogram, cell",
            where,
        ):
            hist = histograms.setdefault(name, {"labels": [], "counts": [], "hidden": []})
            hist["labels"].append(label)
            hist["counts"].append(count)
            hist["hidden"].append(hidden)
        keys = ("boxes", "suppressed_boxes", "noisy_boxes", "calls_seen", "calls_analysed")
        return {**dict(zip(keys, row, strict=True)), "histograms": histograms}

    def export_csv(self, path: Path) -> None:
        """Every merged cell (and the call totals as histogram "calls") as CSV, atomically."""
        rows = self._db.execute(
            """SELECT m.site, m.queue, m.period, 'calls', 0, 'seen', m.calls_seen, 0,
                    m.boxes, m.suppressed_boxes, m.noisy_boxes FROM merged m
               UNION ALL
               SELECT m.site, m.queue, m.period, 'calls', 1, 'analysed', m.calls_analysed, 0,
                    m.boxes, m.suppressed_boxes, m.noisy_boxes FROM merged m
               UNION ALL
               SELECT c.site, c.queue, c.period, c.histogram, c.cell, c.label, c.count, c.hidden,
                    m.boxes, m.suppressed_boxes, m.noisy_boxes
               FROM merged_cells c JOIN merged m
                    ON m.site = c.site AND m.queue = c.queue AND m.period = c.period
               ORDER BY 1, 2, 3, 4, 5"""
        ).fetchall()
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_FIELDS)
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def close(self) -> None:
        self._db.close()
