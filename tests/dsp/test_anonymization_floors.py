"""The anonymization benchmark on a subset, held above agreed floors.

bench/anonymization.py's own code runs on actors 13-24 (the shipped emotion model's test
actors 21-24 among them), 20 clips each, with the default ranges and a fixed seed: original
speech and callveil's anonymizer (McAdams B2, the slow comparison, stays in the bench). The
floors sit a few points below what this subset measured; the full 24-actor run is in the README.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gateway.config import AnonymizerConfig
from tests.conftest import REPO

# the module's one benchmark run takes about three minutes on one core
pytestmark = pytest.mark.timeout(900)

SUBSET = range(13, 25)
BLOCKS = [set(range(13, 17)), set(range(17, 21)), set(range(21, 25))]
CLIPS_PER_ACTOR = 20
SEED = 7


@pytest.fixture(scope="module")
def rows(ravdess: Path) -> dict[str, object]:
    pytest.importorskip(
        "resemblyzer", reason="the benchmark's attacker needs resemblyzer: bash scripts/setup-eval"
    )
    sys.path.insert(0, str(REPO / "bench"))
    import anonymization
    from threadpoolctl import threadpool_limits

    clips = [
        c
        for c in anonymization.load_clips(ravdess, max(SUBSET), CLIPS_PER_ACTOR)
        if c.speaker in SUBSET
    ]
    systems = {"callveil": anonymization.CallveilSystem(AnonymizerConfig())}
    with threadpool_limits(1):
        original, callveil = anonymization.evaluate(clips, BLOCKS, systems, SEED)
    return {"original": original, "callveil": callveil}


def test_the_attacker_recognizes_unanonymized_voices(rows):
    # without this the EER floors below would say nothing (measured: 13.6 % and 14.4 %)
    original = rows["original"]
    assert original.lazy["all"] < 0.25
    assert original.semi["all"] < 0.25


def test_voices_stay_hidden_from_every_attacker(rows):
    # measured on this subset: 43.3, 44.4, 44.2 and 42.2 %
    callveil = rows["callveil"]
    assert callveil.ignorant["all"] >= 0.40
    assert callveil.lazy["all"] >= 0.41
    assert callveil.semi["all"] >= 0.40
    assert callveil.inverting["all"] >= 0.39


def test_emotion_and_pitch_survive(rows):
    # measured: the shipped model 56.5 % on these 80 clips of its test actors, before and after
    # anonymization alike (on all 240 of them over six draws: see the README's table); the
    # stand-in retrained on anonymized speech 35.4 %; pitch r 0.933
    original, callveil = rows["original"], rows["callveil"]
    assert callveil.uar_shipped >= 0.52
    assert callveil.uar_shipped >= original.uar_shipped - 0.06
    assert callveil.uar_adapted >= 0.30
    assert callveil.pitch_r >= 0.85
