"""The dashboard's summary of the feed store: withheld stays withheld when boxes merge."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import pytest

from gateway.feed.store import FeedStore
from gateway.feed.summary import open_reader, summary
from gateway.feed.verify import Received
from gateway.publish import topics
from tests.aggregates.summaries import released_body


def _store(db: Path, published: list[tuple[str, dict]]) -> None:
    with FeedStore(db) as store:
        for seq, (box, body) in enumerate(published, 1):
            store.add_bucket(Received(topics.AGGREGATES, "rome", box, seq, body))


def _read(db: Path, **kwargs: object) -> dict:
    with closing(open_reader(db)) as reader:
        return summary(reader, **kwargs)


def test_a_box_that_withheld_leaves_the_others_counts_as_lower_bounds(tmp_path: Path) -> None:
    full, small = released_body("2026-03-02", 40, seed=1), released_body("2026-03-02", 5, seed=2)
    assert small["suppressed"] and not full["suppressed"]
    other = released_body("2026-03-02", 60, seed=3)
    db = tmp_path / "feed.db"
    _store(db, [("box-a", full), ("box-b", small), ("box-c", other)])
    (bucket,) = _read(db)["buckets"]
    assert (bucket["boxes"], bucket["withheld_boxes"], bucket["withheld"]) == (3, 1, False)
    assert bucket["calls_analysed"] == 100 and bucket["calls_seen"] == 1000
    # a cell one box withheld and the other published: the other's count, marked incomplete
    mixed = [
        (name, i)
        for name, hist in full["histograms"].items()
        for i, count in enumerate(hist["counts"])
        if (count is None) != (other["histograms"][name]["counts"][i] is None)
    ]
    checked = 0
    for name, i in mixed:
        known = full["histograms"][name]["counts"][i] or other["histograms"][name]["counts"][i]
        shown = _cell(bucket, name, i)
        if shown is not None:
            assert shown == (known, 1), name
            checked += 1
    assert checked >= 5, "the seeds should give cells withheld at one box only"


def _cell(bucket: dict, name: str, i: int) -> tuple[int | None, int] | None:
    """(count, hidden) of cell ``i`` of histogram ``name`` in a summary bucket, if shown."""
    kind, _, rest = name.partition(".")
    if kind == "topic":  # only the "yes" cell: the calls that mentioned it
        topic = bucket["topics"][rest]
        return (topic["calls"], topic["hidden"]) if i == 1 else None
    if kind == "emotion":
        role, emotion = rest.split(".")
        hist = bucket["emotions"][role][emotion]
    elif bucket.get(name) is not None:
        hist = bucket[name]
    else:
        return None
    return hist["counts"][i], hist["hidden"][i]


def test_a_bucket_every_box_withheld_has_no_numbers_and_periods_are_limited(
    tmp_path: Path,
) -> None:
    db = tmp_path / "feed.db"
    days = ("2026-03-01", "2026-03-02", "2026-03-03")
    _store(
        db,
        [
            ("box-a", released_body(days[0], 40, seed=1)),
            ("box-a", released_body(days[1], 40, seed=2)),
            ("box-a", released_body(days[2], 4, seed=3)),
            ("box-b", released_body(days[2], 6, seed=4)),
        ],
    )
    buckets = _read(db, registered=["box-a", "box-z"])["buckets"]
    assert [b["period"] for b in buckets] == list(days)  # oldest first
    withheld = buckets[-1]
    assert (withheld["boxes"], withheld["withheld_boxes"], withheld["k"]) == (2, 2, 10)
    assert withheld["withheld"] and withheld["calls_analysed"] is None
    assert withheld["tension_rate"] is withheld["sampling_rate"] is withheld["tension"] is None
    assert [b["period"] for b in _read(db, periods=2)["buckets"]] == list(days[1:])
    with pytest.raises(ValueError, match="periods must be from 1 to 366"):
        _read(db, periods=0)


def test_liveness_lists_registered_boxes_never_heard_from(tmp_path: Path) -> None:
    db = tmp_path / "feed.db"
    with FeedStore(db) as store:
        body = {"state": "offline", "release": "0.1.0", "key_fingerprint": "0" * 64}
        store.set_status(Received(topics.STATUS, "rome", "box-a", 3, body))
    boxes = _read(db, registered=["box-a", "box-z"])["boxes"]
    assert boxes == [
        {"box": "box-a", "site": "rome", "state": "offline", "release": "0.1.0", "alarms": []},
        {"box": "box-z", "site": None, "state": "unknown", "release": None, "alarms": []},
    ]
