"""What one analysed call leaves behind: ``CallSummary``, the only output of the per-call stages.

It holds shares, distributions and positions relative to the call (0 = start of the kept
audio, 1 = end), a coarse duration bucket and labels from closed vocabularies. No field can
hold a call reference, a clock time, an address or free text taken from the call; the
constructor refuses values outside those ranges, and a test checks the field types.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass

from gateway.events import Role

EMOTIONS = ("neutral", "anger", "happiness", "sadness", "fear", "disgust", "surprise")
# Upper edges in seconds of the duration buckets; the last bucket is open.
DURATION_EDGES_S = (60.0, 180.0, 600.0, 1800.0)
DURATION_LABELS = ("<1 min", "1-3 min", "3-10 min", "10-30 min", ">30 min")
ANALYSIS_STAGES = frozenset({"emotion", "keywords"})


class Trend(enum.Enum):
    """How tension moved over the call; UNKNOWN when too little speech was analysed."""

    IMPROVING = "improving"
    STABLE = "stable"
    WORSENING = "worsening"
    UNKNOWN = "unknown"


class TensionKind(enum.Enum):
    CUSTOMER_NEGATIVE_AROUSAL = "customer_negative_arousal"  # sustained, high arousal
    ESCALATION = "escalation"  # both sides rising in turn


def duration_bucket(seconds: float) -> int:
    """Index into DURATION_LABELS of a call lasting ``seconds``."""
    return sum(seconds >= edge for edge in DURATION_EDGES_S)


def _share(value: float, what: str) -> None:
    if not (isinstance(value, float | int) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{what} must be a share between 0 and 1, got {value!r}")


@dataclass(frozen=True, slots=True)
class RoleSummary:
    """One side of the call: its share of the speech and what it sounded like."""

    role: Role
    talk_share: float
    emotions: tuple[float, ...]  # share of this role's analysed speech per EMOTIONS label
    arousal: float  # speech-weighted mean, -1 (calm) .. 1 (excited)
    valence: float  # speech-weighted mean, -1 (negative) .. 1 (positive)

    def __post_init__(self) -> None:
        if self.role not in (Role.OPERATOR, Role.CUSTOMER):
            raise ValueError(f"a role summary is for the operator or the customer, not {self.role}")
        _share(self.talk_share, "talk_share")
        if len(self.emotions) != len(EMOTIONS):
            raise ValueError(f"emotions needs {len(EMOTIONS)} shares ({', '.join(EMOTIONS)})")
        for label, share in zip(EMOTIONS, self.emotions, strict=True):
            _share(share, f"emotion share {label}")
        if self.emotions and sum(self.emotions) > 0 and abs(sum(self.emotions) - 1.0) > 1e-6:
            raise ValueError("emotion shares must sum to 1 (or all be 0 when nothing was analysed)")
        for name in ("arousal", "valence"):
            value = getattr(self, name)
            if not (math.isfinite(value) and -1.0 <= value <= 1.0):
                raise ValueError(f"{name} must lie in [-1, 1], got {value!r}")


@dataclass(frozen=True, slots=True)
class TensionEvent:
    kind: TensionKind
    position: float  # fraction of the call where it began

    def __post_init__(self) -> None:
        _share(self.position, "tension position")


@dataclass(frozen=True, slots=True)
class TopicMention:
    topic: str  # a topic name from the configured lexicon, never words heard in the call
    role: Role
    position: float

    def __post_init__(self) -> None:
        _share(self.position, "topic position")


@dataclass(frozen=True, slots=True)
class CallSummary:
    duration_bucket: int  # index into DURATION_LABELS
    analysed_share: float  # share of the kept audio that went through every analysis stage
    skipped: frozenset[str]  # analysis stages dropped under overload
    silence_ratio: float
    overtalk_ratio: float
    roles: tuple[RoleSummary, ...]
    tension: tuple[TensionEvent, ...]
    trend: Trend
    topics: tuple[TopicMention, ...]

    def __post_init__(self) -> None:
        if not 0 <= self.duration_bucket < len(DURATION_LABELS):
            raise ValueError(f"duration_bucket must index {DURATION_LABELS}")
        for name in ("analysed_share", "silence_ratio", "overtalk_ratio"):
            _share(getattr(self, name), name)
        if not self.skipped <= ANALYSIS_STAGES:
            raise ValueError(f"skipped stages must be among {sorted(ANALYSIS_STAGES)}")
        if len({r.role for r in self.roles}) != len(self.roles):
            raise ValueError("at most one summary per role")


def summary_json(summary: CallSummary) -> bytes:
    """The summary as canonical JSON (sorted keys, rounded shares), as the vault keeps it."""
    document = {
        "duration": DURATION_LABELS[summary.duration_bucket],
        "analysed_share": round(summary.analysed_share, 4),
        "skipped": sorted(summary.skipped),
        "silence_ratio": round(summary.silence_ratio, 4),
        "overtalk_ratio": round(summary.overtalk_ratio, 4),
        "roles": [
            {
                "role": r.role.value,
                "talk_share": round(r.talk_share, 4),
                "emotions": dict(zip(EMOTIONS, (round(e, 4) for e in r.emotions), strict=True)),
                "arousal": round(r.arousal, 4),
                "valence": round(r.valence, 4),
            }
            for r in summary.roles
        ],
        "tension": [
            {"kind": t.kind.value, "position": round(t.position, 3)} for t in summary.tension
        ],
        "trend": summary.trend.value,
        "topics": [
            {"topic": m.topic, "role": m.role.value, "position": round(m.position, 3)}
            for m in summary.topics
        ],
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
