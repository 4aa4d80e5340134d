"""The inverting attacker of the anonymization benchmark: knows the method, not the draw.

callveil's disguise moves a call's pitch, vocal-tract scale and spectral tilt by amounts drawn
per call. An attacker who has the software but not the draw can estimate where each clip's
voice now sits and move it to a fixed place with the anonymizer itself: the median F0 (pYIN)
to a fixed target per gender, the long-term spectrum's centroid (tilt removed, 250-3500 Hz) to
a fixed frequency by the bilinear warp that gets it there, and its slope to a fixed tilt. Two
draws of one speaker then meet again near the same point; what the normalization also removes
is the speaker's own pitch and vocal-tract scale, so whether it helps is a measurement. The
same normalization is applied to every system's output, the original speech included.

The undoing attacker also knows the configured ranges of callveil's anonymizer. The defaults
draw each size from a narrow band near the top of its range, so the size is almost known and
only the direction is secret: it guesses the middle of each range and, per clip, the
directions that bring the voice back nearest to ordinary voices (the population's F0 by gender,
long-term spectral centroid and slope, measured on original speech), then undoes that disguise
with the anonymizer itself. The formant-region moves and ripples are left in place (fitting
the ripples to the clip's long-term spectrum as well moved its EER by under a point in a trial).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.config import AnonymizerConfig
from gateway.dsp.anonymize import KNOTS, AnonymizerParams, disguise, warp_positions

RATE = 8000
N_FFT = 256
# typical adult medians; any fixed value works, what matters is that every clip meets it
TARGET_F0_HZ = {True: 210.0, False: 120.0}
TARGET_CENTROID_HZ = 1500.0
TARGET_SLOPE_DB = -20.0
WARPS = np.linspace(-0.4, 0.4, 41)
_FREQS = np.linspace(0.0, RATE / 2, N_FFT // 2 + 1)
_BAND = (_FREQS >= 250.0) & (_FREQS <= 3500.0)
_UNWARPED = (0.0,) * len(KNOTS)


def long_term_spectrum_db(x: np.ndarray) -> np.ndarray:
    """Mean power spectrum (dB) of the frames within 35 dB of the loudest."""
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[:: N_FFT // 4] * np.hanning(N_FFT)
    power = np.abs(np.fft.rfft(frames)) ** 2
    energy = power.sum(axis=1)
    return 10.0 * np.log10(power[energy > energy.max() * 10**-3.5].mean(axis=0) + 1e-12)


def _slope_db(spectrum_db: np.ndarray) -> float:
    """dB change from DC to Nyquist of the straight line through the band."""
    return float(np.polyfit(_FREQS[_BAND] / (RATE / 2), spectrum_db[_BAND], 1)[0])


def _centroid_hz(spectrum_db: np.ndarray) -> float:
    flat = spectrum_db - _slope_db(spectrum_db) * _FREQS / (RATE / 2)
    power = 10.0 ** (flat[_BAND] / 10.0)
    return float(np.sum(_FREQS[_BAND] * power) / np.sum(power))


def _warped(spectrum_db: np.ndarray, warp: float) -> np.ndarray:
    positions = warp_positions(spectrum_db.size, warp, _UNWARPED)
    return np.interp(positions, np.arange(spectrum_db.size), spectrum_db)


def normalizing_params(x: np.ndarray, f0: np.ndarray, female: bool) -> AnonymizerParams:
    """The disguise that moves this clip's voice to the fixed targets."""
    voiced = f0[np.isfinite(f0)]
    ratio = 1.0
    if voiced.size:
        ratio = float(np.clip(TARGET_F0_HZ[female] / np.median(voiced), 0.5, 2.0))
    spectrum = long_term_spectrum_db(x)
    gaps = [abs(_centroid_hz(_warped(spectrum, w)) - TARGET_CENTROID_HZ) for w in WARPS]
    warp = float(WARPS[int(np.argmin(gaps))])
    tilt = float(np.clip(TARGET_SLOPE_DB - _slope_db(_warped(spectrum, warp)), -24.0, 24.0))
    return AnonymizerParams(pitch_ratio=ratio, warp=warp, tilt_db=tilt)


def normalize(x: np.ndarray, f0: np.ndarray, female: bool) -> np.ndarray:
    """``x`` (8 kHz) with its pitch, vocal-tract scale and tilt moved to the targets."""
    return disguise(x, normalizing_params(x, f0, female), RATE).astype(np.float64)


@dataclass(frozen=True, slots=True)
class Population:
    """Where ordinary voices sit: what the undoing attacker compares a disguised clip with."""

    f0_hz: dict[bool, float]  # geometric mean of the clips' median F0, by gender (True: female)
    centroid_hz: float
    slope_db: float

    @classmethod
    def of(cls, signals: list[np.ndarray], f0: list[np.ndarray], female: list[bool]) -> Population:
        medians: dict[bool, list[float]] = {True: [], False: []}
        for track, is_female in zip(f0, female, strict=True):
            voiced = track[np.isfinite(track)]
            if voiced.size:
                medians[is_female].append(float(np.log(np.median(voiced))))
        spectra = [long_term_spectrum_db(x) for x in signals]
        return cls(
            f0_hz={g: float(np.exp(np.mean(v))) for g, v in medians.items()},
            centroid_hz=float(np.mean([_centroid_hz(s) for s in spectra])),
            slope_db=float(np.mean([_slope_db(s) for s in spectra])),
        )


def undoing_params(
    x: np.ndarray, f0: np.ndarray, female: bool, ranges: AnonymizerConfig, population: Population
) -> AnonymizerParams:
    """The inverse of the disguise the attacker guesses: each size the middle of its configured
    range, each sign the one that brings the clip back nearest to ordinary voices."""
    semitones, warp, tilt = (
        float(np.mean(r)) for r in (ranges.pitch_semitones, ranges.formant_warp, ranges.tilt_db)
    )
    ratio = 1.0
    voiced = f0[np.isfinite(f0)]
    if voiced.size:
        target = np.log(population.f0_hz[female])
        ratio = min(
            (2.0 ** (s * semitones / 12.0) for s in (1, -1)),
            key=lambda r: abs(np.log(np.median(voiced) / r) - target),
        )
    spectrum = long_term_spectrum_db(x)
    warp = min(
        (warp, -warp),
        key=lambda w: abs(_centroid_hz(_warped(spectrum, -w)) - population.centroid_hz),
    )
    slope = _slope_db(_warped(spectrum, -warp))
    tilt = min((tilt, -tilt), key=lambda t: abs(slope - t - population.slope_db))
    return AnonymizerParams(pitch_ratio=1.0 / ratio, warp=-warp, tilt_db=-tilt)


def undo(
    x: np.ndarray, f0: np.ndarray, female: bool, ranges: AnonymizerConfig, population: Population
) -> np.ndarray:
    """``x`` (8 kHz) with the guessed disguise undone."""
    return disguise(x, undoing_params(x, f0, female, ranges, population), RATE).astype(np.float64)
