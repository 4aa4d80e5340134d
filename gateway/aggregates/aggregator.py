"""The aggregator: open buckets on disk, folded call by call, released once their period closes.

Open buckets live in SQLite (WAL, ``synchronous=FULL``), one transaction per call, so a crash
or a restart loses nothing counted. ``tick`` releases every bucket whose period has closed
by the local date: the published body (noise drawn once, then suppression) replaces the open
bucket in one transaction and waits in the ``released`` table until the sink (the publisher's
outbox) has taken it. A crash between the two hands the same body over again, which the
centre recognises as a duplicate; the noise is never drawn twice for one bucket.

A call counts in one bucket only, its queue's or else the site's (queue ''): buckets are
disjoint, so subtracting one published bucket from another isolates no calls.

One call should reach ``call_seen`` and ``add`` in the same period (``count`` does both at
its end, in one transaction), so that it weighs on one period only, as the noise's epsilon
assumes.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from gateway.aggregates.bucket import Bucket, from_state, merge, to_state
from gateway.aggregates.cells import contribution, empty_bucket
from gateway.aggregates.labels import check_label
from gateway.aggregates.period import PERIODS, is_closed, period_of
from gateway.aggregates.release import release
from gateway.callsummary import CallSummary
from gateway.closing import Closing
from gateway.config import Config
from gateway.vault.database import open_database, transaction

log = structlog.get_logger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS open_buckets (
        queue TEXT NOT NULL,  -- '' for the whole site
        period TEXT NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (queue, period)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS released (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        body TEXT NOT NULL
    )""",
)


class Aggregator(Closing):
    """Buckets per period (and queue, when the daemon knows one) for one site."""

    def __init__(
        self,
        path: Path,
        *,
        topics: Sequence[str],
        period: str = "day",
        k: int = 10,
        epsilon: float | None = None,
        clock: Callable[[], dt.date] = dt.date.today,
    ) -> None:
        if period not in PERIODS:
            raise ValueError(f"period {period!r}: use one of {', '.join(PERIODS)}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if epsilon is not None and not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon}")
        self._topics = tuple(check_label(t, "topic") for t in topics)
        self._period = period
        self._k = k
        self._epsilon = epsilon
        self._clock = clock
        self._db = open_database(path, _SCHEMA)

    def _fold(self, queue: str | None, calls: Bucket) -> None:
        key = "" if queue is None else check_label(queue, "queue")
        period = period_of(self._clock(), self._period)
        with transaction(self._db):
            row = self._db.execute(
                "SELECT state FROM open_buckets WHERE queue = ? AND period = ?", (key, period)
            ).fetchone()
            bucket = empty_bucket(self._topics) if row is None else from_state(json.loads(row[0]))
            state = json.dumps(to_state(merge(bucket, calls)), separators=(",", ":"))
            self._db.execute(
                "INSERT OR REPLACE INTO open_buckets (queue, period, state) VALUES (?, ?, ?)",
                (key, period, state),
            )

    def call_seen(self, queue: str | None = None) -> None:
        """Count one call of any policy (the base of the achieved sampling rate)."""
        self._fold(queue, Bucket(calls_seen=1))

    def add(self, summary: CallSummary, queue: str | None = None) -> None:
        """Fold one analysed call into the open bucket of today's period."""
        self._fold(queue, contribution(summary, self._topics))

    def count(self, summary: CallSummary | None, queue: str | None = None) -> None:
        """One ended call: seen, and analysed with ``summary`` when it was, in one transaction
        (a crash cannot leave it seen but not analysed)."""
        calls = Bucket(calls_seen=1)
        if summary is not None:
            calls = merge(calls, contribution(summary, self._topics))
        self._fold(queue, calls)

    def open_periods(self) -> list[tuple[str | None, str]]:
        """(queue, period) of every bucket not yet released."""
        rows = self._db.execute("SELECT queue, period FROM open_buckets ORDER BY period, queue")
        return [(queue or None, period) for queue, period in rows]

    def tick(self, sink: Callable[[dict[str, Any]], object]) -> int:
        """Release every bucket whose period has closed, handing each body to ``sink``.

        Returns how many bodies the sink took. If the sink raises (say, the outbox is full),
        that body and those after it stay for the next tick and the exception propagates.
        """
        today = self._clock()
        with transaction(self._db):
            rows = self._db.execute(
                "SELECT queue, period, state FROM open_buckets ORDER BY period, queue"
            ).fetchall()
            for queue, period, state in rows:
                if not is_closed(period, today):
                    continue
                body = release(
                    from_state(json.loads(state)),
                    period=period,
                    queue=queue or None,
                    k=self._k,
                    epsilon=self._epsilon,
                )
                self._db.execute(
                    "INSERT INTO released (body) VALUES (?)", (json.dumps(body, sort_keys=True),)
                )
                self._db.execute(
                    "DELETE FROM open_buckets WHERE queue = ? AND period = ?", (queue, period)
                )
                log.info("bucket_released", period=period, suppressed=body["suppressed"])
        handed = 0
        pending = self._db.execute("SELECT id, body FROM released ORDER BY id").fetchall()
        for row_id, body in pending:
            sink(json.loads(body))
            with transaction(self._db):
                self._db.execute("DELETE FROM released WHERE id = ?", (row_id,))
            handed += 1
        return handed

    def close(self) -> None:
        self._db.close()


def open_aggregator(config: Config) -> Aggregator:
    """The aggregator ``config.aggregates`` describes, counting ``config.keywords`` topics."""
    settings = config.aggregates
    return Aggregator(
        Path(settings.state_path),
        topics=sorted(config.keywords.topics),
        period=settings.period,
        k=settings.k,
        epsilon=settings.epsilon if settings.dp else None,
    )
