"""The aggregator: buckets on disk, released only after their period closes, never lost."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.aggregates.aggregator import Aggregator
from tests.aggregates.summaries import TOPICS, seeded_summaries

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self, day: dt.date) -> None:
        self.day = day

    def __call__(self) -> dt.date:
        return self.day


def open_aggregator(path: Path, clock: Clock, **kw: object) -> Aggregator:
    return Aggregator(path, topics=TOPICS, clock=clock, **{"k": 5, **kw})  # type: ignore[arg-type]


def test_a_bucket_is_released_only_after_its_day(tmp_path: Path) -> None:
    clock = Clock(dt.date(2026, 3, 2))
    released: list[dict] = []
    with open_aggregator(tmp_path / "agg.db", clock) as agg:
        for summary in seeded_summaries(12, seed=1):
            agg.call_seen()
            agg.add(summary)
        for _ in range(100):
            agg.call_seen()  # the calls that were not sampled
        assert agg.tick(released.append) == 0
        assert agg.open_periods() == [(None, "2026-03-02")]
        clock.day = dt.date(2026, 3, 3)
        assert agg.tick(released.append) == 1
        assert agg.open_periods() == []
        assert agg.tick(released.append) == 0
    (body,) = released
    assert body["period"] == "2026-03-02"
    assert (body["calls_seen"], body["calls_analysed"]) == (112, 12)


def test_weeks_and_queues_are_separate_buckets(tmp_path: Path) -> None:
    clock = Clock(dt.date(2026, 3, 2))  # a Monday
    released: list[dict] = []
    with open_aggregator(tmp_path / "agg.db", clock, period="week") as agg:
        summaries = seeded_summaries(12, seed=2)
        for summary in summaries[:6]:
            agg.add(summary, queue="sales")
        clock.day = dt.date(2026, 3, 8)  # Sunday, same week
        for summary in summaries[6:]:
            agg.add(summary, queue="sales")
        agg.add(summaries[0])
        assert agg.open_periods() == [(None, "2026-W10"), ("sales", "2026-W10")]
        assert agg.tick(released.append) == 0
        clock.day = dt.date(2026, 3, 9)
        assert agg.tick(released.append) == 2
    bodies = {b["queue"]: b for b in released}
    assert bodies["sales"]["calls_analysed"] == 12
    assert bodies[None]["suppressed"] is True  # one call is below k
    with open_aggregator(tmp_path / "agg.db", clock) as agg, pytest.raises(ValueError):
        agg.add(summaries[0], queue="Sales Desk")


def test_open_buckets_survive_a_restart(tmp_path: Path) -> None:
    clock = Clock(dt.date(2026, 3, 2))
    summaries = seeded_summaries(10, seed=3)
    with open_aggregator(tmp_path / "agg.db", clock) as agg:
        for summary in summaries[:4]:
            agg.add(summary)
    with open_aggregator(tmp_path / "agg.db", clock) as agg:  # shut down mid-day, started again
        for summary in summaries[4:]:
            agg.add(summary)
        clock.day = dt.date(2026, 3, 3)
        released: list[dict] = []
        agg.tick(released.append)
    assert released[0]["calls_analysed"] == 10


def test_open_buckets_survive_a_killed_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import datetime as dt, sys
        from pathlib import Path
        from gateway.aggregates.aggregator import Aggregator
        from tests.aggregates.summaries import TOPICS, seeded_summaries
        agg = Aggregator(Path(sys.argv[1]), topics=TOPICS, clock=lambda: dt.date(2026, 3, 2))
        for summary in seeded_summaries(15, seed=4):
            agg.add(summary)
        print("added", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "agg.db")],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "added"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    clock = Clock(dt.date(2026, 3, 3))
    released: list[dict] = []
    with open_aggregator(tmp_path / "agg.db", clock, k=10) as agg:
        agg.tick(released.append)
    assert released[0]["calls_analysed"] == 15


def test_a_body_the_sink_refuses_is_offered_again_unchanged(tmp_path: Path) -> None:
    pytest.importorskip("opendp", reason="OpenDP is not installed (pip install 'callveil[dp]')")
    clock = Clock(dt.date(2026, 3, 2))
    with open_aggregator(tmp_path / "agg.db", clock, epsilon=1.0) as agg:
        for summary in seeded_summaries(30, seed=5):
            agg.add(summary)
        clock.day = dt.date(2026, 3, 3)
        offered: list[dict] = []

        def full(body: dict) -> None:
            offered.append(body)
            raise RuntimeError("outbox full")

        with pytest.raises(RuntimeError, match="outbox full"):
            agg.tick(full)
        assert agg.open_periods() == []  # released once, noise drawn once
    with open_aggregator(tmp_path / "agg.db", clock, epsilon=1.0) as agg:
        taken: list[dict] = []
        assert agg.tick(taken.append) == 1
        assert agg.tick(taken.append) == 0
    assert taken == offered  # the same noisy body, not a second draw


def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="period"):
        Aggregator(tmp_path / "a.db", topics=TOPICS, period="month")
    with pytest.raises(ValueError, match="topic"):
        Aggregator(tmp_path / "a.db", topics=["Billing!"])


def test_the_configured_aggregator_counts_the_configured_topics(tmp_path: Path) -> None:
    from gateway.aggregates.aggregator import open_aggregator
    from gateway.config import parse_config

    config = parse_config(
        {
            "aggregates": {"state_path": str(tmp_path / "agg.db"), "period": "week"},
            "keywords": {"topics": {"billing": ["fattura"]}},
        }
    )
    with open_aggregator(config) as agg:
        summary = next(
            s for s in seeded_summaries(20, seed=7) if {m.topic for m in s.topics} - {"billing"}
        )
        with pytest.raises(ValueError, match="not in the lexicon"):
            agg.add(summary)  # it mentions topics this box does not listen for
        agg.call_seen()
        ((queue, period),) = agg.open_periods()
    assert queue is None and "-W" in period


def test_count_folds_a_call_as_seen_and_analysed_at_once(tmp_path: Path) -> None:
    clock = Clock(dt.date(2026, 3, 2))
    summaries = seeded_summaries(12, seed=3)
    bodies: dict[str, list[dict]] = {"separate": [], "count": []}
    for way, released in bodies.items():
        with open_aggregator(tmp_path / f"{way}.db", clock) as agg:
            for summary in [*summaries, *[None] * 30]:
                if way == "count":
                    agg.count(summary)
                    continue
                agg.call_seen()
                if summary is not None:
                    agg.add(summary)
            clock.day = dt.date(2026, 3, 3)
            agg.tick(released.append)
            clock.day = dt.date(2026, 3, 2)
    assert bodies["count"] == bodies["separate"]
    assert (bodies["count"][0]["calls_seen"], bodies["count"][0]["calls_analysed"]) == (42, 12)
