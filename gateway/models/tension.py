"""Tension between operator and customer, from the emotion readings of a call's speech.

A segment is *tense* when its arousal is above ``arousal_threshold`` and its valence below
``valence_threshold`` (the high-arousal, negative quadrant of Russell's circumplex: anger,
fear, disgust). Two kinds of event are reported, each at its relative position in the call:

- **customer negative arousal**: the customer's tense segments add up to ``sustain_s`` seconds
  with none of the customer's calm segments in between (one outburst is not tension);
- **escalation**: three turns in a row, alternating between the roles, each more aroused than
  the same role's turn before, the last of them tense.

The trend compares the customer's speech-weighted tension (arousal above zero times valence
below zero, 0..1) in the first and the last third of the call: a change beyond
``trend_delta`` is worsening or improving, anything less is stable, and a third holding less
than ``min_trend_speech_s`` of the customer's analysed speech makes it unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.callsummary import TensionEvent, TensionKind, Trend
from gateway.config import TensionConfig
from gateway.events import Role
from gateway.models.emotion import EmotionScores


@dataclass(frozen=True, slots=True)
class ScoredSegment:
    """A speech segment's place in the call (seconds, relative) and its emotion reading."""

    role: Role
    start: float
    duration: float
    scores: EmotionScores | None  # None: too short to read, or emotion analysis was skipped


def _tense(scores: EmotionScores, config: TensionConfig) -> bool:
    return scores.arousal > config.arousal_threshold and scores.valence < config.valence_threshold


def tension_level(scores: EmotionScores) -> float:
    """0 (calm or positive) .. 1 (fully aroused and negative)."""
    return max(scores.arousal, 0.0) * max(-scores.valence, 0.0)


def _position(start: float, duration: float) -> float:
    return min(max(start / duration, 0.0), 1.0) if duration > 0 else 0.0


def _customer_runs(
    segments: list[ScoredSegment], config: TensionConfig, duration: float
) -> list[TensionEvent]:
    events, run_start, run_seconds, reported = [], 0.0, 0.0, False
    for seg in segments:
        if seg.role is not Role.CUSTOMER or seg.scores is None:
            continue
        if not _tense(seg.scores, config):
            run_seconds, reported = 0.0, False
            continue
        if run_seconds == 0.0:
            run_start = seg.start
        run_seconds += seg.duration
        if run_seconds >= config.sustain_s and not reported:
            events.append(
                TensionEvent(TensionKind.CUSTOMER_NEGATIVE_AROUSAL, _position(run_start, duration))
            )
            reported = True
    return events


def _turns(segments: list[ScoredSegment]) -> list[tuple[Role, float, float, EmotionScores]]:
    """Consecutive readings of one role merged into a turn.

    Each turn is (role, start, speech-weighted arousal, the reading of its last segment).
    """
    turns: list[tuple[Role, float, float, float, EmotionScores]] = []  # role, start, a*d, d, last
    for seg in segments:
        if seg.scores is None or seg.role not in (Role.OPERATOR, Role.CUSTOMER):
            continue
        if turns and turns[-1][0] is seg.role:
            role, start, weighted, seconds, _ = turns[-1]
            turns[-1] = (role, start, weighted + seg.scores.arousal * seg.duration,
                         seconds + seg.duration, seg.scores)  # fmt: skip
        else:
            turns.append((seg.role, seg.start, seg.scores.arousal * seg.duration, seg.duration,
                          seg.scores))  # fmt: skip
    return [(r, s, w / d if d > 0 else 0.0, last) for r, s, w, d, last in turns]


def _escalations(
    segments: list[ScoredSegment], config: TensionConfig, duration: float
) -> list[TensionEvent]:
    turns = _turns(segments)
    events, i = [], 4
    while i < len(turns):
        # turns alternate between the roles, so k - 2 is the same role's turn before k
        rising = all(turns[k][2] > turns[k - 2][2] for k in (i - 2, i - 1, i))
        if rising and _tense(turns[i][3], config):
            events.append(
                TensionEvent(TensionKind.ESCALATION, _position(turns[i - 2][1], duration))
            )
            i += 3  # one event per escalating exchange
        else:
            i += 1
    return events


def trend(segments: list[ScoredSegment], config: TensionConfig, duration: float) -> Trend:
    thirds = [[0.0, 0.0], [0.0, 0.0]]  # first, last: (tension x seconds, seconds)
    for seg in segments:
        if seg.role is not Role.CUSTOMER or seg.scores is None or duration <= 0:
            continue
        middle = (seg.start + seg.duration / 2) / duration
        third = 0 if middle < 1 / 3 else 1 if middle >= 2 / 3 else None
        if third is not None:
            thirds[third][0] += tension_level(seg.scores) * seg.duration
            thirds[third][1] += seg.duration
    if min(seconds for _, seconds in thirds) < config.min_trend_speech_s:
        return Trend.UNKNOWN
    change = thirds[1][0] / thirds[1][1] - thirds[0][0] / thirds[0][1]
    if change > config.trend_delta:
        return Trend.WORSENING
    if change < -config.trend_delta:
        return Trend.IMPROVING
    return Trend.STABLE


def tension_events(
    segments: list[ScoredSegment], config: TensionConfig, duration: float
) -> tuple[TensionEvent, ...]:
    """Every tension event of a call, in order of position; ``segments`` sorted by start."""
    events = _customer_runs(segments, config, duration) + _escalations(segments, config, duration)
    return tuple(sorted(events, key=lambda e: e.position))
