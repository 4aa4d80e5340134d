"""The models: each loaded as the daemon loads it, and run once on known input."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from gateway.config import ConfigError, EmotionConfig, KeywordsConfig, SpeechConfig
from gateway.doctor.findings import Finding, fail, ok
from gateway.dsp.frames import FRAME_SECONDS

EMOTION = "models.emotion"
KEYWORDS = "models.keywords"
VAD = "models.vad"
_REINSTALL = "reinstall callveil: the model ships inside the package"
_PROBE_DBFS = -30.0


def check_emotion(config: EmotionConfig) -> Finding:
    """Load the ONNX model and score one second of quiet noise.

    Silence is not scored by design (``predict`` returns None below its floor), so the probe
    is noise at -30 dBFS: it passes the whole front end and the network.
    """
    from gateway.models.emotion import EmotionModel

    started = time.monotonic()
    try:
        model = EmotionModel.from_config(config)
    except ConfigError as exc:
        return fail(EMOTION, "the emotion model does not load", str(exc))
    loaded = time.monotonic()
    rate = model.sample_rate
    noise = np.random.default_rng(0).standard_normal(rate) * 10 ** (_PROBE_DBFS / 20)
    scores = model.predict(noise.astype(np.float32))
    scored = time.monotonic()
    if scores is None or not all(math.isfinite(p) for p in scores.probabilities):
        return fail(
            EMOTION,
            f"{model.path} loads but gives no reading for one second of noise",
            "use the model shipped with this release (empty emotion.model_path)",
        )
    return ok(
        EMOTION,
        f"{model.path.name} loaded in {(loaded - started) * 1000:.0f} ms, scored one second of "
        f"noise in {(scored - loaded) * 1000:.0f} ms",
    )


def check_keywords(config: KeywordsConfig) -> Finding:
    """Load the Vosk model and check that every topic phrase and filler is in its vocabulary."""
    from gateway.models.keywords import KeywordSpotter

    path = Path(config.model_path)
    if not path.is_dir():
        return fail(
            KEYWORDS,
            f"keywords.model_path {path} does not exist",
            "unpack the Vosk model there (a directory with am/, conf/ and graph/), "
            "or point keywords.model_path at it",
        )
    started = time.monotonic()
    try:
        KeywordSpotter.from_config(config)
    except ConfigError as exc:
        return fail(KEYWORDS, f"the Vosk model in {path} cannot spot the topics", str(exc))
    phrases = sum(len(p) for p in config.topics.values())
    return ok(
        KEYWORDS,
        f"{path} loaded in {time.monotonic() - started:.1f} s; its vocabulary has every "
        f"word of the {phrases} topic phrases and {len(config.fillers)} fillers",
    )


def check_vad(config: SpeechConfig) -> Finding:
    """Load silero VAD and check that it hears no speech in one second of silence."""
    from gateway.dsp.vad import SileroVad

    rate = config.analysis_rate
    try:
        vad = SileroVad(rate)
    except FileNotFoundError as exc:
        return fail(VAD, "the VAD model is missing", f"{exc}; {_REINSTALL}")
    frame = np.zeros(round(rate * FRAME_SECONDS), dtype=np.float32)
    probabilities = [p for _ in range(round(1 / FRAME_SECONDS)) for p in vad.push(frame)]
    probabilities += vad.flush()
    loudest = max(probabilities)
    if loudest >= config.vad_threshold:
        return fail(
            VAD,
            f"the VAD hears speech in silence (probability {loudest:.2f}, threshold "
            f"{config.vad_threshold:.2f})",
            f"the shipped silero_vad.onnx is damaged: {_REINSTALL}",
        )
    return ok(
        VAD,
        f"silero VAD at {rate} Hz: one second of silence scores at most {loudest:.3f}",
    )
