"""A whole analysed call through the speech pipeline and the emotion model to its summary."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gateway.callsummary import EMOTIONS, CallSummary, Trend
from gateway.config import Config
from gateway.events import AudioChunk, CallRef, Role
from gateway.models.callanalysis import CallAnalysis
from gateway.models.emotion import EmotionModel
from tests.conftest import shared_dir
from tests.models.speech import recorded, tools_missing

RATE = 8000
CHUNK = RATE // 50
ACTORS = (21, 22, 23, 24)  # the emotion model's test speakers, never trained on


def direction(code: str) -> np.ndarray:
    """Four strong-intensity clips of one emotion, by the test actors, with pauses between."""
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RAVDESS speech not found at {root} (set CALLVEIL_SHARED)")
    if tools_missing():
        pytest.skip(tools_missing())
    pause = np.zeros(RATE // 2, dtype=np.int16)
    intensity = "01" if code == "01" else "02"  # neutral has no strong intensity
    clips = [
        recorded(root / f"Actor_{a:02d}" / f"03-01-{code}-{intensity}-01-01-{a:02d}.wav")
        for a in ACTORS
    ]
    return np.concatenate([part for clip in clips for part in (clip, pause)])


def analyse(call: dict[Role, np.ndarray], analysis: CallAnalysis) -> CallSummary:
    ref = CallRef.new()
    for role, audio in call.items():
        for i in range(0, len(audio), CHUNK):
            analysis.push(AudioChunk(ref, role, audio[i : i + CHUNK], RATE, i))
    return analysis.finish()


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return EmotionModel()


def test_an_angry_customer_and_a_calm_operator(model: EmotionModel) -> None:
    call = {Role.OPERATOR: direction("01"), Role.CUSTOMER: direction("05")}
    summary = analyse(call, CallAnalysis(Config(), model, None))
    assert summary.skipped == frozenset({"keywords"})
    assert summary.topics == ()
    roles = {r.role: r for r in summary.roles}
    assert set(roles) == {Role.OPERATOR, Role.CUSTOMER}
    assert sum(r.talk_share for r in roles.values()) == pytest.approx(1.0)
    for r in roles.values():
        assert sum(r.emotions) == pytest.approx(1.0)
    # the model tells shouting from calm speech even through G.711 and the disguise
    assert roles[Role.CUSTOMER].arousal > roles[Role.OPERATOR].arousal
    customer_anger = roles[Role.CUSTOMER].emotions[EMOTIONS.index("anger")]
    assert customer_anger > roles[Role.OPERATOR].emotions[EMOTIONS.index("anger")]
    assert summary.analysed_share > 0.5
    assert 0.0 < summary.silence_ratio < 1.0
    assert summary.duration_bucket == 0  # under a minute


def test_with_emotion_shed_the_summary_says_so(model: EmotionModel) -> None:
    call = {Role.CUSTOMER: direction("05")}
    summary = analyse(call, CallAnalysis(Config(), None, None))
    assert summary.skipped == frozenset({"emotion", "keywords"})
    assert summary.analysed_share == 0.0
    assert summary.trend is Trend.UNKNOWN and summary.tension == ()
    (customer,) = summary.roles
    assert customer.talk_share == 1.0 and sum(customer.emotions) == 0.0


def test_silence_only_call(model: EmotionModel) -> None:
    call = {
        Role.OPERATOR: np.zeros(RATE * 5, np.int16),
        Role.CUSTOMER: np.zeros(RATE * 5, np.int16),
    }
    summary = analyse(call, CallAnalysis(Config(), model, None))
    assert summary.roles == () and summary.tension == ()
    assert summary.silence_ratio == 1.0 and summary.analysed_share == 0.0
    assert summary.trend is Trend.UNKNOWN


def test_the_summary_holds_no_audio_or_reference(model: EmotionModel) -> None:
    summary = analyse({Role.CUSTOMER: direction("05")}, CallAnalysis(Config(), model, None))
    text = repr(dataclasses.asdict(summary))
    assert "CallRef" not in text and "array" not in text
