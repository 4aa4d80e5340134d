"""CallSummary can hold neither a call reference nor a time, and refuses out-of-range values."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from gateway import callsummary as cs
from gateway.events import CallRef, Role

# Every leaf type a summary may contain: numbers, closed enums, and topic names.
ALLOWED = {float, int, str, bool, Role, cs.Trend, cs.TensionKind}


def leaf_types(hint: object) -> set[object]:
    origin = typing.get_origin(hint)
    if origin is None:
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint)
            return set().union(*(leaf_types(hints[f.name]) for f in dataclasses.fields(hint)))
        return {hint}
    return set().union(*(leaf_types(a) for a in typing.get_args(hint) if a is not Ellipsis))


def test_summary_types_cannot_carry_identity_or_time() -> None:
    leaves = leaf_types(cs.CallSummary)
    assert leaves <= ALLOWED, leaves - ALLOWED
    assert CallRef not in leaves
    # str appears only as topic names from the lexicon and stage names from a closed set
    stringly = [
        (cls.__name__, f.name)
        for cls in (cs.CallSummary, cs.RoleSummary, cs.TensionEvent, cs.TopicMention)
        for f in dataclasses.fields(cls)
        if str in leaf_types(typing.get_type_hints(cls)[f.name])
    ]
    assert stringly == [
        ("CallSummary", "skipped"),
        ("CallSummary", "topics"),  # through TopicMention.topic
        ("TopicMention", "topic"),
    ]


def role(r: Role = Role.CUSTOMER, **kw: object) -> cs.RoleSummary:
    values = {"talk_share": 0.5, "emotions": (1.0, 0, 0, 0, 0, 0, 0), "arousal": 0.0,
              "valence": 0.0} | kw  # fmt: skip
    return cs.RoleSummary(r, **values)  # type: ignore[arg-type]


def summary(**kw: object) -> cs.CallSummary:
    values = {
        "duration_bucket": 1, "analysed_share": 1.0, "skipped": frozenset(),
        "silence_ratio": 0.1, "overtalk_ratio": 0.05, "roles": (role(),), "tension": (),
        "trend": cs.Trend.STABLE, "topics": (),
    } | kw  # fmt: skip
    return cs.CallSummary(**values)  # type: ignore[arg-type]


def test_a_valid_summary_builds() -> None:
    s = summary(
        tension=(cs.TensionEvent(cs.TensionKind.ESCALATION, 0.7),),
        topics=(cs.TopicMention("billing", Role.CUSTOMER, 0.2),),
        roles=(role(Role.OPERATOR), role(Role.CUSTOMER)),
    )
    assert s.trend is cs.Trend.STABLE


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"silence_ratio": 1.5}, "silence_ratio"),
        ({"overtalk_ratio": float("nan")}, "overtalk_ratio"),
        ({"duration_bucket": 9}, "duration_bucket"),
        ({"skipped": frozenset({"trimming"})}, "skipped"),
        ({"roles": (role(), role())}, "one summary per role"),
    ],
)
def test_out_of_range_values_are_refused(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        summary(**kw)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"emotions": (0.5, 0.1, 0, 0, 0, 0, 0)}, "sum to 1"),
        ({"emotions": (1.0,)}, "7 shares"),
        ({"arousal": 2.0}, "arousal"),
        ({"talk_share": -0.1}, "talk_share"),
    ],
)
def test_role_summary_refuses_bad_values(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        role(**kw)
    with pytest.raises(ValueError, match="operator or the customer"):
        role(Role.UNKNOWN)


def test_positions_are_shares_of_the_call() -> None:
    with pytest.raises(ValueError, match="position"):
        cs.TensionEvent(cs.TensionKind.ESCALATION, 12.5)  # seconds, not a share
    with pytest.raises(ValueError, match="position"):
        cs.TopicMention("billing", Role.CUSTOMER, 1.01)


def test_duration_buckets() -> None:
    assert [cs.duration_bucket(s) for s in (0, 59.9, 60, 179, 600, 1799, 1800, 99999)] == [
        0, 0, 1, 1, 3, 3, 4, 4,
    ]  # fmt: skip
