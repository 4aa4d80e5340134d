"""A labelled speech corpus, and the telephone channel the box hears it through.

Any corpus described by a ``labels.csv`` with the columns ``path`` (relative to the csv),
``speaker`` and ``emotion`` will do; a table maps its emotion names onto the telephone label
set. Each clip is set to the nominal telephone speech level, goes down to 8 kHz, through a
G.711 A-law round trip (the standard library's encoder, callveil's decoder), optionally
through the anonymizer with a random disguise, and back up to the 16 kHz analysis rate by the
dsp chain's own resampler, as the chain hands segments to the models.
"""

from __future__ import annotations

import csv
import warnings
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from gateway.capture.codecs.g711 import ALAW_TABLE
from gateway.config import AnonymizerConfig
from gateway.dsp.anonymize import disguise, draw_params
from gateway.dsp.resample import Resampler
from gateway.models.emotion import LABELS
from gateway.models.logmel import RATE as ANALYSIS_RATE

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

TELEPHONE_RATE = 8000
# ITU-T P.56 active speech level of the nominal telephone level (-26 dBov): RAVDESS clips were
# recorded from about -70 to -15 dBFS RMS, far wider than a line carries, and the quietest
# would drown in G.711's quantization
NOMINAL_DBFS = -26.0
_FRAME = TELEPHONE_RATE // 50  # 20 ms, the anonymizer's block
_MARGIN = TELEPHONE_RATE // 10  # kept around the detected speech


class CorpusError(Exception):
    """The corpus cannot be read as described; the message says what to fix."""


@dataclass(frozen=True, slots=True)
class Clip:
    path: str  # relative to the folder of labels.csv
    speaker: str
    label: str  # one of gateway.models.emotion.LABELS


def read_labels(labels_csv: Path, label_map: Mapping[str, str]) -> list[Clip]:
    """The clips listed in ``labels_csv``, their emotions mapped through ``label_map``."""
    if not labels_csv.is_file():
        raise CorpusError(f"{labels_csv} does not exist: pass --data DIR with a labels.csv")
    wrong = {k: v for k, v in label_map.items() if v not in LABELS}
    if wrong:
        raise CorpusError(f"label map targets {wrong} are not among {', '.join(LABELS)}")
    with labels_csv.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"path", "speaker", "emotion"} - set(reader.fieldnames or ())
        if missing:
            raise CorpusError(f"{labels_csv} lacks the column(s) {', '.join(sorted(missing))}")
        rows = list(reader)
    unknown = sorted({r["emotion"] for r in rows} - set(label_map))
    if unknown:
        raise CorpusError(
            f"{labels_csv}: emotions {unknown} have no entry in the [labels] table of the "
            "configuration; map each to one of " + ", ".join(LABELS)
        )
    return [Clip(r["path"], r["speaker"], label_map[r["emotion"]]) for r in rows]


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM wav file as float64 in [-1, 1] (first channel) and its rate."""
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                raise CorpusError(f"{path}: expected 16-bit PCM, got {8 * w.getsampwidth()}-bit")
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
            return pcm[:: w.getnchannels()] / 32768.0, w.getframerate()
    except (OSError, EOFError, wave.Error) as exc:
        raise CorpusError(f"{path}: not a readable wav file ({exc})") from None


def telephone(x: np.ndarray, rate: int) -> np.ndarray:
    """``x`` at 8 kHz after a G.711 A-law round trip, float32 in [-1, 1]."""
    x8 = resample_poly(x, TELEPHONE_RATE, rate) if rate != TELEPHONE_RATE else x
    pcm = np.clip(np.round(x8 * 32768.0), -32768, 32767).astype("<i2")
    codes = np.frombuffer(audioop.lin2alaw(pcm.tobytes(), 2), dtype=np.uint8)
    return (ALAW_TABLE[codes] / 32768.0).astype(np.float32)


def anonymize(x8: np.ndarray, rng: np.random.Generator, config: AnonymizerConfig) -> np.ndarray:
    """``x8`` through the anonymizer with a disguise drawn from ``rng``, aligned and same length."""
    return disguise(x8, draw_params(rng, config))


def _frame_levels(x: np.ndarray, frame: int) -> np.ndarray:
    """Power of each whole ``frame``-sample frame, in dB."""
    frames = x[: x.size // frame * frame].reshape(-1, frame).astype(np.float64)
    return 10.0 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def at_nominal_level(x: np.ndarray, rate: int, floor_db: float) -> np.ndarray:
    """``x`` scaled so that its active speech (20 ms frames within ``floor_db`` of the
    loudest) has the nominal telephone level."""
    level = _frame_levels(x, rate // 50)
    active = level[level > level.max() - floor_db]
    active_db = 10.0 * np.log10(np.mean(10.0 ** (active / 10.0)))
    return np.clip(x * 10.0 ** ((NOMINAL_DBFS - active_db) / 20.0), -1.0, 1.0)


def speech_bounds(x8: np.ndarray, floor_db: float) -> tuple[int, int]:
    """First and last sample of the 20 ms frames within ``floor_db`` of the loudest, plus a
    margin: RAVDESS clips hold about a second of room noise at each end that the box's voice
    activity detection would not pass on."""
    level = _frame_levels(x8, _FRAME)
    active = np.flatnonzero(level > level.max() - floor_db)
    start = max(0, int(active[0]) * _FRAME - _MARGIN)
    stop = min(x8.size, (int(active[-1]) + 1) * _FRAME + _MARGIN)
    return start, stop


def to_analysis_rate(x8: np.ndarray) -> np.ndarray:
    """``x8`` raised to the analysis rate by the dsp chain's own resampler, delay removed."""
    up = Resampler(TELEPHONE_RATE, ANALYSIS_RATE)
    y = np.concatenate([up.process(x8), up.flush()])
    return y[up.delay : up.delay + x8.size * ANALYSIS_RATE // TELEPHONE_RATE]


def heard(
    x: np.ndarray,
    rate: int,
    draws: Sequence[np.random.Generator],
    config: AnonymizerConfig,
    floor_db: float,
) -> list[np.ndarray]:
    """The clip as the models hear it: at the nominal level over the telephone, then once per
    anonymizer draw; each trimmed to the speech and at the analysis rate."""
    x8 = telephone(at_nominal_level(x, rate, floor_db), rate)
    start, stop = speech_bounds(x8, floor_db)
    signals = [x8, *(anonymize(x8, rng, config) for rng in draws)]
    return [to_analysis_rate(s[start:stop]) for s in signals]
