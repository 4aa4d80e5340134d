"""Tension events and trend from emotion readings placed in a call."""

from __future__ import annotations

import pytest

from gateway.callsummary import TensionKind, Trend
from gateway.config import TensionConfig
from gateway.events import Role
from gateway.models.emotion import EmotionScores, arousal_valence
from gateway.models.tension import ScoredSegment, tension_events, tension_level, trend

CONFIG = TensionConfig()
OP, CU = Role.OPERATOR, Role.CUSTOMER


def reading(label: str) -> EmotionScores:
    """A confident reading of one category, with the model's own arousal/valence mapping."""
    labels = ("neutral", "anger", "happiness", "sadness", "fear", "disgust", "surprise")
    probabilities = tuple(0.94 if name == label else 0.01 for name in labels)
    arousal, valence = arousal_valence(probabilities)
    return EmotionScores(probabilities, arousal, valence, 0.0)


def seg(role: Role, start: float, duration: float, label: str | None) -> ScoredSegment:
    return ScoredSegment(role, start, duration, None if label is None else reading(label))


def test_anger_is_tense_and_neutral_or_happy_is_not() -> None:
    assert tension_level(reading("anger")) > 0.3
    assert tension_level(reading("neutral")) == pytest.approx(0.0, abs=0.02)
    assert tension_level(reading("happiness")) == 0.0


def test_sustained_customer_anger_is_one_event_at_its_start() -> None:
    segments = [
        seg(OP, 0, 5, "neutral"),
        seg(CU, 20, 2.5, "anger"),
        seg(OP, 23, 2, "neutral"),  # the operator speaking does not break the customer's run
        seg(CU, 26, 2.5, "anger"),
        seg(CU, 29, 3, "anger"),  # still the same run: one event, not two
    ]
    events = tension_events(segments, CONFIG, 100.0)
    assert [(e.kind, e.position) for e in events] == [(TensionKind.CUSTOMER_NEGATIVE_AROUSAL, 0.2)]


def test_a_short_outburst_or_a_calm_pause_is_not_sustained() -> None:
    short = [seg(CU, 10, 3, "anger")]
    broken = [seg(CU, 10, 2.5, "anger"), seg(CU, 13, 2, "neutral"), seg(CU, 16, 2.5, "anger")]
    assert tension_events(short, CONFIG, 60.0) == ()
    assert tension_events(broken, CONFIG, 60.0) == ()
    unreadable = [seg(CU, 10, 30, None)]
    assert tension_events(unreadable, CONFIG, 60.0) == ()


def test_escalating_exchange() -> None:
    # each turn more aroused than the same side's turn before, ending in anger
    labels = ["neutral", "neutral", "happiness", "anger", "anger", "fear"]
    segments = [
        seg(OP if i % 2 == 0 else CU, 10.0 * i, 1.5, label) for i, label in enumerate(labels)
    ]
    events = tension_events(segments, CONFIG, 100.0)
    assert [(e.kind, e.position) for e in events] == [(TensionKind.ESCALATION, 0.2)]
    calming = list(reversed(labels))
    segments = [
        seg(OP if i % 2 == 0 else CU, 10.0 * i, 1.5, label) for i, label in enumerate(calming)
    ]
    assert tension_events(segments, CONFIG, 100.0) == ()


@pytest.mark.parametrize(
    ("first", "last", "expected"),
    [
        ("neutral", "anger", Trend.WORSENING),
        ("anger", "happiness", Trend.IMPROVING),
        ("neutral", "neutral", Trend.STABLE),
    ],
)
def test_trend_compares_first_and_last_third(first: str, last: str, expected: Trend) -> None:
    segments = [seg(CU, 5, 10, first), seg(CU, 40, 10, "neutral"), seg(CU, 80, 10, last)]
    assert trend(segments, CONFIG, 90.0) is expected


def test_trend_unknown_without_enough_customer_speech() -> None:
    segments = [seg(CU, 5, 1, "neutral"), seg(OP, 80, 10, "anger"), seg(CU, 85, 1, "anger")]
    assert trend(segments, CONFIG, 90.0) is Trend.UNKNOWN
    assert trend([], CONFIG, 0.0) is Trend.UNKNOWN
