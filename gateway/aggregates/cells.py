"""Where one call summary lands: the histograms of a bucket and the cell of each.

Every histogram partitions a population of analysed calls, so a call adds one to exactly one
cell of each histogram it belongs to. That keeps every published number a count of calls
(which ``k`` can be applied to) and bounds what one call changes (which noise is scaled to).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.aggregates.bucket import Bucket, Histogram
from gateway.callsummary import (
    ANALYSIS_STAGES,
    DURATION_LABELS,
    EMOTIONS,
    CallSummary,
    TensionKind,
    Trend,
)
from gateway.events import Role

RATIO_LABELS = ("0-20%", "20-40%", "40-60%", "60-80%", "80-100%")
# how much of one role's analysed speech carried one emotion
SHARE_LABELS = ("none", "under 25%", "25-50%", "50% or more")
TENSION_LABELS = ("none", *(k.value for k in TensionKind), "both")
TREND_LABELS = tuple(t.value for t in Trend)
PRESENCE_LABELS = ("no", "yes")
ROLES = (Role.OPERATOR, Role.CUSTOMER)


def layout(topics: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Histogram name -> cell labels, for a box listening for ``topics``."""
    names: dict[str, tuple[str, ...]] = {
        "duration": DURATION_LABELS,
        "silence": RATIO_LABELS,
        "overtalk": RATIO_LABELS,
        "coverage": RATIO_LABELS,  # share of the kept audio that every stage analysed
        "tension": TENSION_LABELS,
        "trend": TREND_LABELS,
    }
    for stage in sorted(ANALYSIS_STAGES):
        names[f"skipped.{stage}"] = PRESENCE_LABELS
    for topic in topics:
        names[f"topic.{topic}"] = PRESENCE_LABELS
    for role in ROLES:
        for emotion in EMOTIONS:
            names[f"emotion.{role.value}.{emotion}"] = SHARE_LABELS
    return {name: names[name] for name in sorted(names)}


def empty_bucket(topics: Sequence[str]) -> Bucket:
    return Bucket(0, 0, {name: Histogram.empty(labels) for name, labels in layout(topics).items()})


def _ratio_cell(ratio: float) -> int:
    return min(int(ratio * len(RATIO_LABELS)), len(RATIO_LABELS) - 1)


def _share_cell(share: float) -> int:
    if share <= 0.0:
        return 0
    return 1 if share < 0.25 else 2 if share < 0.5 else 3


def _tension_cell(summary: CallSummary) -> int:
    kinds = {event.kind for event in summary.tension}
    if not kinds:
        return 0
    if len(kinds) > 1:
        return len(TENSION_LABELS) - 1
    return TENSION_LABELS.index(kinds.pop().value)


def cells_of(summary: CallSummary, topics: Sequence[str]) -> dict[str, int]:
    """Histogram name -> index of the cell ``summary`` falls in (its histograms only).

    ValueError for a topic outside ``topics``: the per-call stages and the aggregator must
    share one lexicon, or a topic would be counted nowhere.
    """
    unknown = {m.topic for m in summary.topics} - set(topics)
    if unknown:
        raise ValueError(
            f"call summary names topics {sorted(unknown)} that are not in the lexicon "
            f"{list(topics)}; build the aggregator from the same keywords.topics"
        )
    cells = {
        "duration": summary.duration_bucket,
        "silence": _ratio_cell(summary.silence_ratio),
        "overtalk": _ratio_cell(summary.overtalk_ratio),
        "coverage": _ratio_cell(summary.analysed_share),
        "tension": _tension_cell(summary),
        "trend": TREND_LABELS.index(summary.trend.value),
    }
    for stage in ANALYSIS_STAGES:
        cells[f"skipped.{stage}"] = int(stage in summary.skipped)
    mentioned = {m.topic for m in summary.topics}
    for topic in topics:
        cells[f"topic.{topic}"] = int(topic in mentioned)
    for role_summary in summary.roles:
        if sum(role_summary.emotions) <= 0:  # nothing of this side was analysed
            continue
        for emotion, share in zip(EMOTIONS, role_summary.emotions, strict=True):
            cells[f"emotion.{role_summary.role.value}.{emotion}"] = _share_cell(share)
    return cells


def contribution(summary: CallSummary, topics: Sequence[str]) -> Bucket:
    """The bucket of this one analysed call (``calls_seen`` is counted separately)."""
    cells = cells_of(summary, topics)
    histograms = {}
    for name, labels in layout(topics).items():
        counts = [0] * len(labels)
        if name in cells:
            counts[cells[name]] = 1
        histograms[name] = Histogram(labels, tuple(counts), (0,) * len(labels))
    return Bucket(0, 1, histograms)
