"""The segment statistics inside the shipped emotion model: the graph is cut at its named
``statistics`` tensor and run by onnxruntime, so the pitch track the box runs is what is
checked, not the training-side torch code it was exported from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.dsp.anonymize import AnonymizerParams, disguise
from gateway.models import logmel
from gateway.models.emotion import SHIPPED_MODEL
from tests.conftest import shared_dir

RATE = logmel.RATE
# the last eleven statistics, in the order models/functionals.py computes them
VOICED, F0_MEDIAN, F0_QUARTILES, F0_RANGE, F0_SLOPE = -11, -10, -9, -8, -7


@pytest.fixture(scope="module")
def statistics(tmp_path_factory: pytest.TempPathFactory):
    onnx_utils = pytest.importorskip("onnx.utils", reason="onnx (a test dependency) is missing")
    import onnxruntime as ort

    cut = tmp_path_factory.mktemp("graph") / "statistics.onnx"
    onnx_utils.extract_model(str(SHIPPED_MODEL), str(cut), ["power"], ["statistics"])
    session = ort.InferenceSession(str(cut), providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        (out,) = session.run(None, {"power": logmel.power_spectrum(x.astype(np.float32))[None]})
        return out[0]

    return run


def _harmonics(f0: np.ndarray) -> np.ndarray:
    """A buzz with harmonics up to the telephone band, following the contour ``f0`` (Hz)."""
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    top = int(3400 / f0.max())
    return 0.1 * sum(np.sin(h * phase) / h for h in range(1, top + 1))


def _semitones(hz: float) -> float:
    return 12 * np.log2(hz / 100)


@pytest.mark.parametrize("hz", [100.0, 150.0, 220.0, 330.0, 450.0])
def test_pitch_of_a_steady_buzz(statistics, hz: float) -> None:
    s = statistics(_harmonics(np.full(RATE, hz)))
    assert s[VOICED] > 0.95
    assert s[F0_MEDIAN] == pytest.approx(_semitones(hz), abs=0.4)
    assert s[F0_QUARTILES] < 0.3 and s[F0_RANGE] < 0.5
    assert abs(s[F0_SLOPE]) < 0.5


def test_pitch_slope_of_a_glide(statistics) -> None:
    t = np.arange(RATE) / RATE
    s = statistics(_harmonics(120 + 80 * t))  # 120 to 200 Hz in one second
    assert s[VOICED] > 0.95
    expected = _semitones(200) - _semitones(120)  # roughly linear in semitones over this span
    assert s[F0_SLOPE] == pytest.approx(expected, rel=0.1)


def test_noise_and_silence_are_unvoiced(statistics) -> None:
    noise = 0.1 * np.random.default_rng(3).standard_normal(RATE)
    assert statistics(noise)[VOICED] < 0.05
    silent = statistics(np.zeros(RATE))
    assert np.all(np.isfinite(silent)) and silent[VOICED] == 0


def test_pitch_of_real_speech_follows_the_anonymizers_shift(statistics) -> None:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RAVDESS not found at {root} (set CALLVEIL_SHARED)")
    pytest.importorskip("scipy", reason="scipy (a development dependency) is not installed")
    from models import corpus

    # three women and three men, neutral (normal intensity only) to angry (strong)
    clips = [
        f"Actor_{a:02d}/03-01-{e:02d}-0{1 if e == 1 else 2}-01-01-{a:02d}.wav"
        for a, e in ((2, 1), (8, 5), (22, 5), (3, 1), (11, 5), (17, 3))
    ]
    moves: dict[float, list[float]] = {-4.0: [], 4.0: []}
    for clip in clips:
        x, rate = corpus.read_wav(Path(root) / clip)
        x8 = corpus.telephone(corpus.at_nominal_level(x, rate, 35.0), rate)
        plain = statistics(corpus.to_analysis_rate(x8))
        assert 0.15 < plain[VOICED] < 0.95, clip  # a sentence: voiced and unvoiced stretches
        assert -5 < plain[F0_MEDIAN] < 25, clip  # an adult voice: about 75 to 420 Hz
        for semitones, moved in moves.items():
            params = AnonymizerParams(pitch_ratio=2 ** (semitones / 12), warp=0.0, tilt_db=0.0)
            shifted = statistics(corpus.to_analysis_rate(disguise(x8, params)))
            moved.append(float(shifted[F0_MEDIAN] - plain[F0_MEDIAN]))
    # the tracker's octave errors can move one clip's median; across speakers it follows
    for semitones, moved in moves.items():
        assert np.median(moved) == pytest.approx(semitones, abs=1.0), moved
