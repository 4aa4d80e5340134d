"""Emotion of one speech segment: seven category probabilities, arousal and valence.

The model is a small convolutional network over log-mel frames (``gateway.models.logmel``:
numpy computes the power spectrum, the graph the mel bands) with mean and standard-deviation
pooling over time, exported to ONNX by
``models/train_emotion.py`` and run with onnxruntime; its card is ``emotion.md`` beside this
file. The session is built once per process and validated at start-up, so a missing, corrupt or
mismatched model file stops the box with a message naming the file, never during a call.

Arousal and valence follow from the probabilities through Russell's circumplex of affect
(Russell 1980, "A circumplex model of affect", J. Pers. Soc. Psychol. 39(6):1161-1178): each
category sits on the unit circle at an angle from the pleasure axis (0 deg) towards the arousal
axis (90 deg), and the scores are the probability-weighted mean of those points, so both lie
in [-1, 1] and a fully neutral segment scores (0, 0). Angles: happiness at "happy" (7.8 deg),
surprise at "astonished" (69.8), fear at "alarmed" (96.5) and sadness at "sad" (207.5), as
scaled in that paper; anger and disgust, for which the paper lists no scaled term of the same
name, at its "distress" (135) and "displeasure" (180) anchors; neutral at the centre.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.callsummary import EMOTIONS
from gateway.config import ConfigError, EmotionConfig
from gateway.models import logmel

# the call summary's label order is the model's output order
LABELS = EMOTIONS
SHIPPED_MODEL = Path(__file__).with_name("emotion.onnx")
# Identifies the front-end a model was trained with; stored in the model's metadata.
FRONTEND = (
    f"logmel rate={logmel.RATE} window={logmel.WINDOW} hop={logmel.HOP} n_fft={logmel.N_FFT} "
    f"bands={logmel.BANDS} fmin={logmel.F_MIN:g} fmax={logmel.F_MAX:g}"
)
MIN_SECONDS = 0.5  # shorter segments carry too little prosody to score: predict returns None
MAX_SECONDS = 20.0  # longer segments are scored in equal pieces, which bounds memory
SILENCE_DBFS = -60.0  # RMS below this: no speech to score, predict returns None
FULL_SCALE = 0.98  # a sample this close to full scale counts as clipped

_CIRCUMPLEX_DEGREES = {
    "happiness": 7.8,
    "surprise": 69.8,
    "fear": 96.5,
    "anger": 135.0,
    "disgust": 180.0,
    "sadness": 207.5,
}


def _circumplex_points() -> np.ndarray:
    points = np.zeros((len(LABELS), 2))
    for i, label in enumerate(LABELS):
        if label in _CIRCUMPLEX_DEGREES:
            angle = math.radians(_CIRCUMPLEX_DEGREES[label])
            points[i] = (math.sin(angle), math.cos(angle))
    return points


_POINTS = _circumplex_points()  # (arousal, valence) of each label


def arousal_valence(probabilities: Sequence[float]) -> tuple[float, float]:
    """Arousal and valence, each in [-1, 1], of probabilities over ``LABELS``."""
    p = np.asarray(probabilities, dtype=np.float64)
    if (
        p.shape != (len(LABELS),)
        or not np.all(p >= 0)
        or not math.isclose(p.sum(), 1, abs_tol=1e-4)
    ):
        raise ValueError(f"expected {len(LABELS)} probabilities summing to 1, got {p.tolist()}")
    arousal, valence = p @ _POINTS
    return float(arousal), float(valence)


class EmotionModelError(ConfigError):
    """The emotion model file cannot be used; raised at start-up and names the file."""


@dataclass(frozen=True, slots=True)
class EmotionScores:
    """The model's reading of one speech segment of one role."""

    probabilities: tuple[float, ...]  # in LABELS order, summing to 1
    arousal: float  # -1 (sleepy) .. 1 (aroused)
    valence: float  # -1 (displeasure) .. 1 (pleasure)
    clipped: float  # fraction of samples at full scale; a high value makes the reading doubtful

    @property
    def label(self) -> str:
        """The most probable category."""
        return LABELS[int(np.argmax(self.probabilities))]


class EmotionModel:
    """The ONNX emotion model, loaded once per process; ``predict`` is safe to call repeatedly."""

    __slots__ = ("_input", "_session", "path")
    sample_rate = logmel.RATE

    def __init__(self, path: Path = SHIPPED_MODEL, *, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.path = path
        if not path.is_file():
            raise EmotionModelError(
                f"emotion model {path} does not exist: reinstall callveil for the shipped model, "
                "or set emotion.model_path to a model exported by models/train_emotion.py"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle worker threads sleep instead of spinning: the box's cores are shared
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EmotionModelError(
                f"emotion model {path} is not a readable ONNX model ({_reason(exc)}); "
                "replace it with the shipped file or re-export it with models/train_emotion.py"
            ) from None
        self._input = self._check(path)

    @classmethod
    def from_config(cls, config: EmotionConfig) -> EmotionModel:
        path = Path(config.model_path) if config.model_path else SHIPPED_MODEL
        return cls(path, threads=config.threads)

    def predict(self, segment: np.ndarray) -> EmotionScores | None:
        """Score one speech segment: mono float audio in [-1, 1] at ``sample_rate``.

        Returns None for a segment shorter than ``MIN_SECONDS`` or quieter than
        ``SILENCE_DBFS``: there is nothing to score. Samples beyond full scale are clipped and
        counted in ``EmotionScores.clipped``.
        """
        x = np.asarray(segment)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"expected one-dimensional float audio in [-1, 1], got {x.dtype} {x.shape}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("the segment has NaN or infinite samples; hand on finite audio")
        if x.size < MIN_SECONDS * self.sample_rate:
            return None
        x = np.clip(x.astype(np.float32, copy=False), -1.0, 1.0)
        if np.mean(np.square(x, dtype=np.float64)) < 10.0 ** (SILENCE_DBFS / 10.0):
            return None
        clipped = float(np.mean(np.abs(x) >= FULL_SCALE))
        pieces = np.array_split(x, math.ceil(x.size / (MAX_SECONDS * self.sample_rate)))
        weighted = sum(p.size * self._run(logmel.power_spectrum(p)) for p in pieces)
        probabilities = weighted / np.sum(weighted)
        arousal, valence = arousal_valence(probabilities)
        return EmotionScores(tuple(float(p) for p in probabilities), arousal, valence, clipped)

    def _run(self, power: np.ndarray) -> np.ndarray:
        (out,) = self._session.run(None, {self._input: power[None]})
        return out[0].astype(np.float64)

    def _check(self, path: Path) -> str:
        """The input name, after checking the graph and its metadata fit this code."""
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        meta = self._session.get_modelmeta().custom_metadata_map
        problems = []
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].shape[2] != logmel.BINS:
            problems.append(f"its input is not (1, frames, {logmel.BINS}) power spectra")
        if len(outputs) != 1 or outputs[0].shape[-1] != len(LABELS):
            problems.append(f"its output is not {len(LABELS)} probabilities")
        if meta.get("labels") != ",".join(LABELS):
            problems.append(f"its labels {meta.get('labels')!r} are not {','.join(LABELS)!r}")
        if meta.get("frontend") != FRONTEND:
            problems.append(
                f"it was trained on front-end {meta.get('frontend')!r}, not {FRONTEND!r}"
            )
        if not problems:
            frames = logmel.frame_count(int(MIN_SECONDS * self.sample_rate))
            probe = self._session.run(
                None, {inputs[0].name: np.zeros((1, frames, logmel.BINS), np.float32)}
            )[0]
            if probe.shape != (1, len(LABELS)) or not math.isclose(probe.sum(), 1, abs_tol=1e-3):
                problems.append("it does not return probabilities for a short segment")
        if problems:
            raise EmotionModelError(
                f"emotion model {path} does not fit this callveil: {'; '.join(problems)}. "
                "Use the model shipped with this release or re-export it with "
                "models/train_emotion.py"
            )
        return inputs[0].name


def _reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
