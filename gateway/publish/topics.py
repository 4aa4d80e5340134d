"""MQTT topics, versioned: ``callveil/v1/<site>/<box>/aggregates`` and ``.../status``."""

from __future__ import annotations

from gateway.aggregates.labels import check_label

PREFIX = "callveil/v1"
AGGREGATES = "aggregates"
STATUS = "status"
KINDS = (AGGREGATES, STATUS)
AGGREGATES_FILTER = f"{PREFIX}/+/+/{AGGREGATES}"
STATUS_FILTER = f"{PREFIX}/+/+/{STATUS}"


def topic(site: str, box: str, kind: str) -> str:
    """The topic of ``kind`` for ``box`` at ``site``; ValueError for an unsafe segment."""
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}; use one of {', '.join(KINDS)}")
    return f"{PREFIX}/{check_label(site, 'site')}/{check_label(box, 'box id')}/{kind}"


def parse(name: str) -> tuple[str, str, str]:
    """(site, box, kind) of a callveil topic; ValueError for any other topic."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX or parts[4] not in KINDS:
        raise ValueError(f"{name!r} is not a {PREFIX} topic")
    return check_label(parts[2], "site"), check_label(parts[3], "box id"), parts[4]
