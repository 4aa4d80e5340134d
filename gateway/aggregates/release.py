"""A closed bucket as published: optional noise, then suppression, as a JSON-ready body.

Noise (when on) is drawn once over every count of the bucket together: one call changes
``calls_seen`` and ``calls_analysed`` by one and one cell of each histogram by one, so the L1
sensitivity is two plus the number of histograms, and ``epsilon`` is what the whole bucket
spends for its period. A bucket with fewer than ``k`` analysed calls is published as a bare
"suppressed" marker; otherwise each histogram goes through ``suppress``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.aggregates.bucket import Bucket, Histogram
from gateway.aggregates.labels import check_label
from gateway.aggregates.period import last_day
from gateway.aggregates.suppress import suppress


def release(
    bucket: Bucket, *, period: str, queue: str | None, k: int, epsilon: float | None
) -> dict[str, Any]:
    """The published body of ``bucket``; ``epsilon`` None means no noise."""
    if any(any(h.hidden) for h in bucket.histograms.values()):
        raise ValueError("only a bucket built from calls can be released, not a merged one")
    last_day(period)  # refuses anything but a period label
    names = sorted(bucket.histograms)
    flat = [bucket.calls_seen, bucket.calls_analysed]
    for name in names:
        flat.extend(bucket.histograms[name].counts)
    noise = None
    if epsilon is not None:
        from gateway.aggregates.noise import MECHANISM, discrete_laplace

        sensitivity = 2 + len(names)
        noised = discrete_laplace(flat, sensitivity, epsilon)
        flat = list(noised.values)
        noise = {
            "mechanism": MECHANISM,
            "library": noised.library,
            "epsilon": epsilon,
            "sensitivity": sensitivity,
            "scale": noised.scale,
        }
    body: dict[str, Any] = {
        "period": period,
        "queue": queue,
        "privacy": {"k": k, "noise": noise},
        "suppressed": True,
        "calls_seen": None,
        "calls_analysed": None,
        "histograms": {},
    }
    analysed, cells = flat[1], flat[2:]
    if analysed < k:
        return body
    # every analysed call was seen: restoring that after noise is post-processing, free of cost
    seen = max(flat[0], analysed)
    histograms = {}
    for name in names:
        labels = bucket.histograms[name].labels
        histograms[name] = {
            "labels": list(labels),
            "counts": list(suppress(cells[: len(labels)], k)),
        }
        cells = cells[len(labels) :]
    return {
        **body,
        "suppressed": False,
        "calls_seen": seen,
        "calls_analysed": analysed,
        "histograms": histograms,
    }


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def bucket_of(body: Mapping[str, Any]) -> Bucket | None:
    """The mergeable bucket a published body stands for; None for a suppressed bucket.

    A withheld cell counts zero with one hidden part. ValueError names what is malformed.
    """
    if not isinstance(body, Mapping):
        raise ValueError("the body is not an object")
    last_day(str(body.get("period")))
    if body.get("queue") is not None:
        check_label(body["queue"], "queue")
    privacy = body.get("privacy")
    if not isinstance(privacy, Mapping) or type(privacy.get("k")) is not int:
        raise ValueError("privacy must be an object with an integer k")
    if privacy.get("noise") is not None and not isinstance(privacy["noise"], Mapping):
        raise ValueError("privacy.noise must be null or an object")
    if body.get("suppressed") is True:
        return None
    if body.get("suppressed") is not False:
        raise ValueError("suppressed must be true or false")
    histograms = body.get("histograms")
    if not isinstance(histograms, Mapping):
        raise ValueError("histograms must be an object")
    out = {}
    for name, hist in histograms.items():
        if not isinstance(hist, Mapping):
            raise ValueError(f"histogram {name!r} is not an object")
        labels, counts = hist.get("labels"), hist.get("counts")
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"histogram {name!r}: labels must be a list of strings")
        if not isinstance(counts, list) or len(counts) != len(labels):
            raise ValueError(f"histogram {name!r}: counts must be a list as long as labels")
        values = [0 if c is None else _int(c, f"histogram {name!r} count") for c in counts]
        out[name] = Histogram(tuple(labels), tuple(values), tuple(int(c is None) for c in counts))
    return Bucket(
        _int(body.get("calls_seen"), "calls_seen"),
        _int(body.get("calls_analysed"), "calls_analysed"),
        {name: out[name] for name in sorted(out)},
    )
