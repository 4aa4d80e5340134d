"""Buckets merge exactly: two boxes' buckets merged equal the bucket of all their calls."""

from __future__ import annotations

from functools import reduce

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.aggregates.bucket import Bucket, Histogram, from_state, merge, to_state
from gateway.aggregates.cells import contribution, layout
from gateway.aggregates.release import bucket_of, release
from gateway.callsummary import CallSummary
from tests.aggregates.summaries import TOPICS, bucket_of_calls, call_summaries, seeded_summaries

calls = st.lists(call_summaries(), max_size=25)


@settings(max_examples=30, deadline=None)
@given(calls, calls, st.integers(0, 50), st.integers(0, 50))
def test_merging_two_boxes_equals_one_bucket_of_all_calls(
    a: list[CallSummary], b: list[CallSummary], seen_a: int, seen_b: int
) -> None:
    merged = merge(bucket_of_calls(a, seen_a), bucket_of_calls(b, seen_b))
    assert merged == bucket_of_calls(a + b, seen_a + seen_b)
    assert merged == merge(bucket_of_calls(b, seen_b), bucket_of_calls(a, seen_a))


@settings(max_examples=20, deadline=None)
@given(calls, calls)
def test_the_feed_path_is_exact_when_only_empty_cells_are_withheld(
    a: list[CallSummary], b: list[CallSummary]
) -> None:
    # released with k = 1 nothing is withheld; the feed parses the bodies and merges them
    def published(summaries: list[CallSummary]) -> Bucket | None:
        body = release(
            bucket_of_calls(summaries, len(summaries)),
            period="2026-03-02",
            queue=None,
            k=1,
            epsilon=None,
        )
        return bucket_of(body)

    def counts(bucket: Bucket | None) -> tuple:
        # with k = 1 only empty cells are withheld, so every count is exact
        bucket = bucket or Bucket()
        cells = {name: h.counts for name, h in bucket.histograms.items()}
        return bucket.calls_seen, bucket.calls_analysed, cells

    parts = [p for p in (published(a), published(b)) if p is not None]
    assert counts(reduce(merge, parts, Bucket())) == counts(published(a + b))


def test_every_call_counts_once_in_each_of_its_histograms() -> None:
    summaries = seeded_summaries(30, seed=3)
    bucket = bucket_of_calls(summaries)
    assert bucket.calls_analysed == 30
    for name in ("duration", "silence", "overtalk", "coverage", "tension", "trend"):
        assert bucket.histograms[name].total() == 30, name
    for topic in TOPICS:
        present = sum(any(m.topic == topic for m in s.topics) for s in summaries)
        assert bucket.histograms[f"topic.{topic}"].counts == (30 - present, present)
    spoke = sum(
        any(r.role.value == "customer" and sum(r.emotions) > 0 for r in s.roles) for s in summaries
    )
    assert bucket.histograms["emotion.customer.anger"].total() == spoke


def test_a_withheld_cell_merges_as_a_hidden_part() -> None:
    labels = ("no", "yes")
    a = Bucket(5, 5, {"topic.billing": Histogram(labels, (5, 0), (0, 1))})
    b = Bucket(7, 7, {"topic.billing": Histogram(labels, (4, 3), (0, 0))})
    merged = merge(a, b).histograms["topic.billing"]
    assert merged.counts == (9, 3)
    assert merged.hidden == (0, 1)  # the 3 is a lower bound: one box withheld its count


def test_different_layouts_of_one_histogram_refuse_to_merge() -> None:
    a = Bucket(1, 1, {"trend": Histogram.empty(("up", "down"))})
    b = Bucket(1, 1, {"trend": Histogram.empty(("up", "flat"))})
    with pytest.raises(ValueError, match="same release and layout"):
        merge(a, b)


def test_stored_state_round_trips() -> None:
    bucket = bucket_of_calls(seeded_summaries(12, seed=5), seen=99)
    assert from_state(to_state(bucket)) == bucket
    with pytest.raises(ValueError, match="not a stored bucket"):
        from_state({"calls_seen": 1})


def test_a_topic_outside_the_lexicon_is_refused() -> None:
    summary = seeded_summaries(20, seed=1)
    mentioned = next(s for s in summary if s.topics)
    with pytest.raises(ValueError, match="not in the lexicon"):
        contribution(mentioned, ("weather",))


def test_layout_names_are_stable_and_sorted() -> None:
    names = list(layout(TOPICS))
    assert names == sorted(names)
    assert "emotion.operator.neutral" in names and "topic.billing" in names
