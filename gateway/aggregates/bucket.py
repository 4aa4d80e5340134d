"""The mergeable bucket: counts of calls per cell, and nothing that could not be added up.

Every histogram is a partition of a population of calls (each call falls in exactly one cell
of each histogram it belongs to), so a bucket's contents are sums over calls and merging two
buckets is cell-wise addition: merging two boxes' buckets gives exactly the bucket of all
their calls. A cell withheld at the source (suppressed below ``k``) adds nothing to ``counts``
and one to ``hidden``, so a merged cell says how many of its parts it lacks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Histogram:
    labels: tuple[str, ...]
    counts: tuple[int, ...]
    hidden: tuple[int, ...]  # per cell: how many merged parts withheld it

    def __post_init__(self) -> None:
        if not len(self.labels) == len(self.counts) == len(self.hidden):
            raise ValueError("a histogram needs one count and one hidden tally per label")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"histogram labels must be distinct: {self.labels}")
        if any(h < 0 for h in self.hidden):
            raise ValueError("hidden tallies cannot be negative")

    @classmethod
    def empty(cls, labels: Iterable[str]) -> Histogram:
        labels = tuple(labels)
        zeros = (0,) * len(labels)
        return cls(labels, zeros, zeros)

    def total(self) -> int:
        return sum(self.counts)


@dataclass(frozen=True, slots=True)
class Bucket:
    calls_seen: int = 0  # every call the box saw, analysed or not
    calls_analysed: int = 0
    histograms: Mapping[str, Histogram] = field(default_factory=dict)


def _merge_histograms(name: str, a: Histogram, b: Histogram) -> Histogram:
    if a.labels != b.labels:
        raise ValueError(
            f"histogram {name!r} has cells {a.labels} in one bucket and {b.labels} in the other; "
            "only buckets of the same release and layout can be merged"
        )
    return Histogram(
        a.labels,
        tuple(x + y for x, y in zip(a.counts, b.counts, strict=True)),
        tuple(x + y for x, y in zip(a.hidden, b.hidden, strict=True)),
    )


def merge(a: Bucket, b: Bucket) -> Bucket:
    """The bucket of the calls of ``a`` and ``b`` together (commutative and associative).

    A histogram present in one bucket only (say, a topic another site does not listen for)
    is carried over as it is.
    """
    histograms = dict(a.histograms)
    for name, hist in b.histograms.items():
        mine = histograms.get(name)
        histograms[name] = hist if mine is None else _merge_histograms(name, mine, hist)
    return Bucket(
        a.calls_seen + b.calls_seen,
        a.calls_analysed + b.calls_analysed,
        {name: histograms[name] for name in sorted(histograms)},
    )


def to_state(bucket: Bucket) -> dict[str, Any]:
    """A JSON-ready form of a bucket, for the open-bucket store."""
    return {
        "calls_seen": bucket.calls_seen,
        "calls_analysed": bucket.calls_analysed,
        "histograms": {
            name: {"labels": list(h.labels), "counts": list(h.counts), "hidden": list(h.hidden)}
            for name, h in bucket.histograms.items()
        },
    }


def from_state(state: Mapping[str, Any]) -> Bucket:
    """The bucket ``to_state`` wrote; ValueError if the state is not one."""
    try:
        return Bucket(
            int(state["calls_seen"]),
            int(state["calls_analysed"]),
            {
                name: Histogram(
                    tuple(str(x) for x in h["labels"]),
                    tuple(int(x) for x in h["counts"]),
                    tuple(int(x) for x in h["hidden"]),
                )
                for name, h in state["histograms"].items()
            },
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a stored bucket ({exc!r})") from None
