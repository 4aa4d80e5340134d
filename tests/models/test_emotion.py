"""The shipped emotion model on real speech, its bad-input handling and its start-up checks."""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from gateway.config import AnonymizerConfig, ConfigError, EmotionConfig, parse_config
from gateway.models import logmel
from gateway.models.emotion import (
    LABELS,
    MIN_SECONDS,
    SHIPPED_MODEL,
    EmotionModel,
    EmotionModelError,
    arousal_valence,
)
from tests.conftest import REPO, shared_dir

RATE = logmel.RATE
FIGURES = REPO / "models" / "emotion.json"
TRAINING_CONFIG = REPO / "models" / "emotion.toml"


@pytest.fixture(scope="module")
def model() -> EmotionModel:
    return EmotionModel()


@pytest.fixture(scope="module")
def ravdess() -> Path:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RAVDESS not found at {root} (set CALLVEIL_SHARED)")
    return root


@pytest.fixture(scope="module")
def corpus():
    """The training side's corpus module, whose resampler is a development dependency."""
    pytest.importorskip("scipy", reason="scipy (a development dependency) is not installed")
    from models import corpus

    return corpus


def _heard(corpus, root: Path, path: str) -> np.ndarray:
    """A corpus clip as the model card's evaluation hears it, without the anonymizer."""
    x, rate = corpus.read_wav(root / path)
    trim_db = tomllib.loads(TRAINING_CONFIG.read_text())["data"]["trim_db"]
    return corpus.heard(x, rate, [], AnonymizerConfig(), trim_db)[0]


def _speech(corpus, root: Path) -> np.ndarray:
    return _heard(corpus, root, "Actor_22/03-01-05-02-01-01-22.wav")  # angry, strong


def test_shipped_model_is_small_and_declares_its_labels() -> None:
    assert SHIPPED_MODEL.stat().st_size < 5 * 2**20
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(SHIPPED_MODEL)).metadata_props}
    assert meta["labels"].split(",") == list(LABELS)


def test_valid_probabilities_on_real_speech(model, ravdess, corpus) -> None:
    scores = model.predict(_speech(corpus, ravdess))
    assert scores is not None
    p = np.array(scores.probabilities)
    assert p.shape == (len(LABELS),) and np.all(p >= 0) and math.isclose(p.sum(), 1, abs_tol=1e-5)
    assert (scores.arousal, scores.valence) == pytest.approx(arousal_valence(p))
    assert scores.clipped < 0.01


def test_predictions_match_the_cards_evaluation(model, ravdess, corpus) -> None:
    # models/emotion.json holds the card run's probabilities for every test clip heard over the
    # telephone; the box's code path must give the same numbers for the same audio
    predictions = json.loads(FIGURES.read_text())["test_predictions"]
    for path in sorted(predictions)[::60][:4]:
        scores = model.predict(_heard(corpus, ravdess, path))
        assert scores is not None
        # up to 7e-4 apart in the 15-epoch card run (cause not yet found); the label must agree
        assert scores.probabilities == pytest.approx(predictions[path], abs=2e-3), path
        assert np.argmax(scores.probabilities) == np.argmax(predictions[path]), path


def test_long_segments_are_scored_in_pieces(model, ravdess, corpus) -> None:
    speech = _speech(corpus, ravdess)
    long = np.tile(speech, math.ceil(45 * RATE / speech.size))
    scores = model.predict(long)
    assert scores is not None
    assert math.isclose(sum(scores.probabilities), 1, abs_tol=1e-5)


def test_short_and_silent_segments_are_not_scored(model) -> None:
    rng = np.random.default_rng(1)
    assert model.predict(np.zeros(0, np.float32)) is None
    assert model.predict(0.3 * rng.standard_normal(int(MIN_SECONDS * RATE) - 1)) is None
    assert model.predict(np.zeros(3 * RATE, np.float32)) is None
    hiss = (1e-4 * rng.standard_normal(3 * RATE)).astype(np.float32)  # -80 dBFS line noise
    assert model.predict(hiss) is None


def test_clipped_speech_is_scored_and_flagged(model, ravdess, corpus) -> None:
    speech = _speech(corpus, ravdess)
    overdriven = np.clip(speech * 20.0, -1.0, 1.0)
    scores = model.predict(overdriven)
    assert scores is not None and scores.clipped > 0.05
    assert math.isclose(sum(scores.probabilities), 1, abs_tol=1e-5)
    beyond = model.predict(speech * 20.0)  # samples past full scale are clipped, not rejected
    assert beyond is not None and beyond.probabilities == pytest.approx(scores.probabilities)


def test_malformed_segments_are_refused(model) -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(np.full(RATE, np.nan, np.float32))
    with pytest.raises(ValueError, match="one-dimensional"):
        model.predict(np.zeros((2, RATE), np.float32))
    with pytest.raises(ValueError, match="float audio"):
        model.predict(np.zeros(RATE, np.int16))


def test_missing_model_file_names_the_file(tmp_path) -> None:
    missing = tmp_path / "absent.onnx"
    with pytest.raises(EmotionModelError, match=re.escape(str(missing))):
        EmotionModel(missing)


def test_corrupt_model_file_names_the_file(tmp_path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(SHIPPED_MODEL.read_bytes()[:5000])
    with pytest.raises(
        EmotionModelError, match=f"{re.escape(str(truncated))}.*not a readable ONNX model"
    ):
        EmotionModel(truncated)
    text = tmp_path / "text.onnx"
    text.write_text("not a model\n")
    with pytest.raises(EmotionModelError, match=re.escape(str(text))):
        EmotionModel(text)


def test_model_for_another_front_end_is_refused(tmp_path) -> None:
    import onnx

    model = onnx.load(str(SHIPPED_MODEL))
    for prop in model.metadata_props:
        if prop.key == "frontend":
            prop.value = "logmel rate=8000 bands=40"
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    with pytest.raises(EmotionModelError, match=f"{re.escape(str(other))}.*front-end"):
        EmotionModel(other)


def test_configuration_chooses_model_and_threads(tmp_path) -> None:
    config = parse_config({"emotion": {"threads": 2}}).emotion
    assert config == EmotionConfig(model_path="", threads=2)
    assert EmotionModel.from_config(config).path == SHIPPED_MODEL
    with pytest.raises(ConfigError, match=r"emotion\.model_path"):
        parse_config({"emotion": {"model_path": "models/emotion.onnx"}})
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        EmotionModel.from_config(EmotionConfig(model_path=str(tmp_path / "x.onnx")))


def test_arousal_valence_follow_the_circumplex() -> None:
    def pure(label: str) -> tuple[float, float]:
        return arousal_valence([1.0 if x == label else 0.0 for x in LABELS])

    assert pure("neutral") == (0.0, 0.0)
    arousal, valence = pure("happiness")
    assert valence > 0.95 and 0 < arousal < 0.2
    for label in ("anger", "fear"):
        arousal, valence = pure(label)
        assert arousal > 0.7 and valence < 0
    arousal, valence = pure("sadness")
    assert arousal < 0 and valence < -0.8
    assert pure("surprise")[0] > 0.9
    assert pure("disgust")[1] == pytest.approx(-1.0)
    # any mixture stays inside the unit disc and moves linearly between its parts
    rng = np.random.default_rng(0)
    for p in rng.dirichlet(np.ones(len(LABELS)), size=50):
        a, v = arousal_valence(p)
        assert a * a + v * v <= 1.0 + 1e-9
    half = arousal_valence([0.5 if x in ("neutral", "sadness") else 0.0 for x in LABELS])
    assert half == pytest.approx(tuple(c / 2 for c in pure("sadness")))
    with pytest.raises(ValueError, match="probabilities"):
        arousal_valence([0.5, 0.5])
