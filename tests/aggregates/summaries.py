"""Call summaries for aggregate tests: a hypothesis strategy and a seeded generator."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from gateway.aggregates.bucket import Bucket, merge
from gateway.aggregates.cells import contribution, empty_bucket
from gateway.aggregates.release import release
from gateway.callsummary import (
    ANALYSIS_STAGES,
    DURATION_LABELS,
    EMOTIONS,
    CallSummary,
    RoleSummary,
    TensionEvent,
    TensionKind,
    TopicMention,
    Trend,
)
from gateway.events import Role

TOPICS = ("billing", "cancellation", "technical_fault", "complaint")
SIDES = (Role.OPERATOR, Role.CUSTOMER)


def _shares(weights: list[float]) -> tuple[float, ...]:
    total = sum(weights)
    if total <= 0:
        return (0.0,) * len(EMOTIONS)
    shares = [w / total for w in weights]
    shares[0] += 1.0 - sum(shares)  # exact sum of 1 despite rounding
    return tuple(max(0.0, s) for s in shares)


@st.composite
def call_summaries(draw: st.DrawFn) -> CallSummary:
    share = st.floats(0.0, 1.0)
    roles = []
    for side in draw(st.lists(st.sampled_from(SIDES), unique=True, max_size=2)):
        weights = draw(st.lists(st.sampled_from([0.0, 0.1, 0.3, 1.0, 4.0]), min_size=7, max_size=7))
        roles.append(
            RoleSummary(
                side, draw(share), _shares(weights), draw(st.floats(-1, 1)), draw(st.floats(-1, 1))
            )
        )
    return CallSummary(
        duration_bucket=draw(st.integers(0, len(DURATION_LABELS) - 1)),
        analysed_share=draw(share),
        skipped=frozenset(draw(st.sets(st.sampled_from(sorted(ANALYSIS_STAGES))))),
        silence_ratio=draw(share),
        overtalk_ratio=draw(share),
        roles=tuple(roles),
        tension=tuple(
            TensionEvent(kind, draw(share))
            for kind in draw(st.lists(st.sampled_from(list(TensionKind)), max_size=3))
        ),
        trend=draw(st.sampled_from(list(Trend))),
        topics=tuple(
            TopicMention(topic, draw(st.sampled_from(SIDES)), draw(share))
            for topic in draw(st.lists(st.sampled_from(TOPICS), max_size=4))
        ),
    )


def seeded_summaries(n: int, seed: int) -> list[CallSummary]:
    """``n`` varied summaries, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        roles = tuple(
            RoleSummary(
                side,
                rng.random(),
                _shares([rng.choice([0.0, 0.2, 1.0, 3.0]) for _ in EMOTIONS]),
                rng.uniform(-1, 1),
                rng.uniform(-1, 1),
            )
            for side in SIDES
        )
        out.append(
            CallSummary(
                duration_bucket=rng.randrange(len(DURATION_LABELS)),
                analysed_share=rng.random(),
                skipped=frozenset(s for s in ANALYSIS_STAGES if rng.random() < 0.1),
                silence_ratio=rng.random(),
                overtalk_ratio=rng.random() * 0.3,
                roles=roles,
                tension=tuple(
                    TensionEvent(kind, rng.random()) for kind in TensionKind if rng.random() < 0.3
                ),
                trend=rng.choice(list(Trend)),
                topics=tuple(
                    TopicMention(t, rng.choice(SIDES), rng.random())
                    for t in TOPICS
                    if rng.random() < 0.4
                ),
            )
        )
    return out


def bucket_of_calls(summaries: list[CallSummary], seen: int = 0) -> Bucket:
    bucket = empty_bucket(TOPICS)
    for s in summaries:
        bucket = merge(bucket, contribution(s, TOPICS))
    return merge(bucket, Bucket(calls_seen=seen))


def released_body(period: str, n: int = 40, seed: int = 0, k: int = 10) -> dict:
    """A published body of ``n`` calls (ten times as many seen) for ``period``."""
    bucket = bucket_of_calls(seeded_summaries(n, seed), seen=10 * n)
    return release(bucket, period=period, queue=None, k=k, epsilon=None)
