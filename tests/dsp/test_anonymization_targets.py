"""The anonymization benchmark's verdict on its targets, from rows of known figures."""

from __future__ import annotations

import sys

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(REPO / "bench"))
    import anonymization

    return anonymization


def _row(bench, name, *, lazy, semi, uar, spread=None, draws=1, inverting=0.45):
    eer = {"all": 0.45, "F": 0.45, "M": 0.45}
    return bench.Row(
        name,
        ignorant=eer,
        lazy={**eer, "all": lazy},
        semi={**eer, "all": semi},
        inverting={**eer, "all": inverting},
        uar_shipped=uar,
        uar=0.3,
        uar_adapted=0.3,
        pitch_r=0.9 if name != "original" else None,
        rtf=0.016 if name != "original" else None,
        draws=draws,
        spread=spread or {},
    )


def test_every_target_met(bench):
    original = _row(bench, "original", lazy=0.19, semi=0.15, uar=0.57)
    b2 = _row(bench, "b2", lazy=0.453, semi=0.38, uar=0.41)
    ours = _row(bench, "callveil", lazy=0.455, semi=0.44, uar=0.53)
    verdict = bench.targets(original, b2, ours)
    assert "MISSED" not in verdict
    assert verdict.count(": met") == 6
    # drop 4.0 points against a third of B2's 16.0
    assert "drop at most a third of B2's: 4.0 vs 5.3: met" in verdict


def test_a_lazy_eer_below_b2s_and_a_large_emotion_drop_are_missed(bench):
    original = _row(bench, "original", lazy=0.19, semi=0.15, uar=0.57)
    spread = {"lazy": 0.004, "semi": 0.01, "shipped": 0.02}
    b2 = _row(bench, "b2", lazy=0.455, semi=0.38, uar=0.41, spread=spread, draws=4)
    ours = _row(bench, "callveil", lazy=0.453, semi=0.44, uar=0.51, spread=spread, draws=4)
    lines = bench.targets(original, b2, ours).splitlines()
    assert lines[0] == "Targets (4 draws per clip; ± standard error over the draws):"
    lazy = next(line for line in lines if "lazy-informed" in line)
    assert lazy.endswith("MISSED")
    # the standard error over four draws is the spread halved
    assert "45.3 ± 0.2 vs B2 45.5 ± 0.2" in lazy
    emotion = next(line for line in lines if "recall drop" in line)
    assert emotion.endswith("MISSED")
    assert next(line for line in lines if "semi-informed" in line).endswith(": met")


def test_an_attacker_under_40_percent_is_missed_even_when_b2_does_worse(bench):
    original = _row(bench, "original", lazy=0.19, semi=0.15, uar=0.57)
    b2 = _row(bench, "b2", lazy=0.36, semi=0.30, uar=0.41)
    ours = _row(bench, "callveil", lazy=0.39, semi=0.41, uar=0.53, inverting=0.35)
    lines = bench.targets(original, b2, ours).splitlines()
    assert next(line for line in lines if "lazy-informed" in line).endswith("MISSED")
    assert next(line for line in lines if "every attacker" in line).endswith("MISSED")
