"""What a closed bucket publishes: k-suppression, complementary suppression, DP noise."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.aggregates.period import is_closed, last_day, period_of
from gateway.aggregates.release import bucket_of, release
from gateway.aggregates.suppress import suppress
from tests.aggregates.summaries import bucket_of_calls, seeded_summaries


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([30, 20, 15], (30, 20, 15)),
        ([30, 0, 15], (30, None, 15)),  # zero is fewer than k: withheld, sum 0 reveals nothing
        ([30, 3, 15], (30, None, None)),  # 3 alone would follow by subtraction: 15 goes too
        ([30, 3, 4, 15], (30, None, None, 15)),  # 3 + 4 withheld together reach k
        ([5, 3], (None, None)),
    ],
)
def test_suppression_rule(counts: list[int], expected: tuple) -> None:
    assert suppress(counts, k=7) == expected


@given(st.lists(st.integers(0, 60), min_size=1, max_size=8), st.integers(1, 20))
def test_no_withheld_sum_below_k_can_be_recovered(counts: list[int], k: int) -> None:
    out = suppress(counts, k)
    withheld = sum(c for c, o in zip(counts, out, strict=True) if o is None)
    assert all(o is None or o >= k for o in out)
    assert withheld == 0 or withheld >= k or all(o is None for o in out)


def test_a_bucket_below_k_publishes_only_that_it_was_suppressed() -> None:
    bucket = bucket_of_calls(seeded_summaries(9, seed=1), seen=90)
    body = release(bucket, period="2026-03-02", queue=None, k=10, epsilon=None)
    assert body["suppressed"] is True
    assert body["calls_seen"] is None and body["calls_analysed"] is None
    assert body["histograms"] == {}
    assert bucket_of(body) is None


def test_cells_below_k_are_withheld_and_the_rest_exact() -> None:
    summaries = seeded_summaries(60, seed=2)
    bucket = bucket_of_calls(summaries, seen=600)
    body = release(bucket, period="2026-03-02", queue="billing-desk", k=10, epsilon=None)
    assert body["suppressed"] is False
    assert (body["calls_seen"], body["calls_analysed"]) == (600, 60)
    assert body["queue"] == "billing-desk"
    withheld = 0
    for name, hist in body["histograms"].items():
        true = bucket.histograms[name].counts
        for published, count in zip(hist["counts"], true, strict=True):
            assert published is None or (published == count and count >= 10)
            withheld += published is None
        assert hist["labels"] == list(bucket.histograms[name].labels)
    assert withheld > 0  # 60 calls over 7 emotions x 4 share levels leave small cells
    assert body["privacy"] == {"k": 10, "noise": None}


def test_noise_is_added_with_its_epsilon_stated() -> None:
    pytest.importorskip("opendp", reason="OpenDP is not installed (pip install 'callveil[dp]')")
    bucket = bucket_of_calls(seeded_summaries(200, seed=4), seen=2000)
    bodies = [release(bucket, period="2026-W10", queue=None, k=10, epsilon=1.0) for _ in range(3)]
    noise = bodies[0]["privacy"]["noise"]
    sensitivity = 2 + len(bucket.histograms)
    assert noise["mechanism"] == "discrete_laplace"
    assert noise["library"].startswith("opendp ")
    assert noise["epsilon"] == 1.0 and noise["sensitivity"] == sensitivity
    assert noise["scale"] == pytest.approx(sensitivity / 1.0, rel=1e-6)
    # each draw is fresh noise around the truth (all six totals exact: odds about 1e-11)
    assert any(b["calls_analysed"] != 200 or b["calls_seen"] != 2000 for b in bodies)
    trend = [b["histograms"]["trend"]["counts"] for b in bodies]
    assert trend[0] != trend[1] or trend[1] != trend[2]
    seen = [b["calls_seen"] for b in bodies]
    assert all(s >= a for s, a in zip(seen, (b["calls_analysed"] for b in bodies), strict=True))
    spread = statistics.pstdev(s - 2000 for s in seen)
    assert spread < 20 * noise["scale"]
    for body in bodies:  # suppression ran on the noisy counts
        for hist in body["histograms"].values():
            assert all(c is None or c >= 10 for c in hist["counts"])


def test_a_merged_bucket_cannot_be_released_again() -> None:
    body = release(
        bucket_of_calls(seeded_summaries(40, seed=6)), period="2026-03-02", queue=None, k=10,
        epsilon=None,
    )  # fmt: skip
    with pytest.raises(ValueError, match="built from calls"):
        release(bucket_of(body), period="2026-03-02", queue=None, k=10, epsilon=None)


@pytest.mark.parametrize(
    "body",
    [
        {"period": "yesterday"},
        {"period": "2026-03-02", "queue": "Bad Queue", "privacy": {"k": 10, "noise": None}},
        {"period": "2026-03-02", "queue": None, "privacy": {"k": 10, "noise": None},
         "suppressed": False, "calls_seen": 3, "calls_analysed": 3,
         "histograms": {"trend": {"labels": ["a"], "counts": [1, 2]}}},
        {"period": "2026-03-02", "queue": None, "privacy": {"k": 10, "noise": None},
         "suppressed": False, "calls_seen": "3", "calls_analysed": 3, "histograms": {}},
    ],
)  # fmt: skip
def test_malformed_bodies_are_refused(body: dict) -> None:
    with pytest.raises(ValueError):
        bucket_of(body)


def test_periods() -> None:
    import datetime as dt

    day = dt.date(2026, 12, 31)
    assert period_of(day, "day") == "2026-12-31"
    assert period_of(day, "week") == "2026-W53"
    assert last_day("2026-W53") == dt.date(2027, 1, 3)
    assert not is_closed("2026-W53", dt.date(2027, 1, 3))
    assert is_closed("2026-W53", dt.date(2027, 1, 4))
    assert is_closed("2026-12-31", dt.date(2027, 1, 1))
    with pytest.raises(ValueError, match="not a period label"):
        last_day("2026-13-01")
