"""Level and prosody of a speech segment: pure numpy, vectorised over frames.

- level: RMS per frame in dBFS (re full scale, as in the rest of callveil: a full-scale sine
  reads -3 dBFS) and the active speech level after ITU-T P.56 method B;
- pitch: YIN (de Cheveigne & Kawahara 2002) on 10 ms hops, 65-600 Hz (shouted speech raised
  further by the anonymizer's pitch shift still fits), with a voicing flag;
- prosody per segment: F0 mean and range in semitones, energy variance, and a speaking-rate
  proxy (syllable nuclei per second: voiced peaks of the energy contour).

The features run on anonymized audio, whose pitch is moved by a per-call constant ratio: F0
range, voicing and energy survive that unchanged, the F0 mean is the disguised voice's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

PITCH_MIN_HZ = 65.0
PITCH_MAX_HZ = 600.0
HOP_S = 0.01
FLOOR_DBFS = -120.0
_WINDOW_S = 0.016  # YIN integration window: a little under the longest period plus one lag
_YIN_THRESHOLD = 0.15
_VOICING_RANGE_DB = 35.0  # frames this far below the loudest are not voiced
_VOICING_FLOOR_DBFS = -60.0
_SEMITONE_REFERENCE_HZ = 100.0
_OCTAVE_SLIP_ST = 10.0
# P.56 method B: envelope time constant, hangover and margin between level and threshold
_P56_TIME_CONSTANT_S = 0.03
_P56_HANGOVER_S = 0.2
_P56_MARGIN_DB = 15.9
_P56_BLOCK_S = 0.005
_NUCLEUS_HALF_WIDTH = 5  # hops either side of a nucleus peak: at most 10 per second
_NUCLEUS_RANGE_DB = 20.0
_SPEECH_RANGE_DB = 30.0  # frames within this of the loudest carry the segment's speech


def level_dbfs(frames: np.ndarray) -> np.ndarray:
    """RMS level of each row of ``frames`` (float samples in [-1, 1]), in dBFS."""
    power = np.mean(np.square(frames, dtype=np.float64), axis=-1)
    return np.maximum(10.0 * np.log10(power + 1e-30), FLOOR_DBFS)


def active_speech_level(x: np.ndarray, rate: int) -> float:
    """Active speech level in dBFS, ITU-T P.56 method B.

    The envelope is the mean magnitude over 5 ms blocks smoothed twice by the 30 ms exponential
    (a block-rate version of the recommendation's sample-rate filter), with a 200 ms hangover;
    the threshold is found on a 0.1 dB grid instead of P.56's octave steps and interpolation.
    """
    x = np.asarray(x, dtype=np.float64)
    block = max(1, round(rate * _P56_BLOCK_S))
    blocks = x.size // block
    if blocks == 0 or not np.any(x):
        return FLOOR_DBFS
    magnitude = np.mean(np.abs(x[: blocks * block]).reshape(blocks, block), axis=1)
    decay = np.exp(-_P56_BLOCK_S / _P56_TIME_CONSTANT_S)
    kernel = (1.0 - decay) * decay ** np.arange(round(5 * _P56_TIME_CONSTANT_S / _P56_BLOCK_S))
    envelope = np.convolve(np.convolve(magnitude, kernel)[:blocks], kernel)[:blocks]
    hang = round(_P56_HANGOVER_S / _P56_BLOCK_S)
    padded = np.concatenate([np.zeros(hang), envelope])
    held = sliding_window_view(padded, hang + 1).max(axis=1)
    held_db = 20.0 * np.log10(np.sort(held) + 1e-30)
    thresholds = np.arange(FLOOR_DBFS, 0.05, 0.1)
    activity = 1.0 - np.searchsorted(held_db, thresholds, side="left") / blocks
    energy = float(np.mean(x[: blocks * block] ** 2))
    with np.errstate(divide="ignore"):
        active = 10.0 * np.log10(energy / activity)
    meets = np.flatnonzero((activity > 0) & (active - thresholds >= _P56_MARGIN_DB))
    if meets.size == 0:
        return FLOOR_DBFS
    return float(active[meets[-1]])


@dataclass(frozen=True, slots=True)
class PitchTrack:
    f0: np.ndarray  # Hz per HOP_S hop; NaN where unvoiced
    level: np.ndarray  # dBFS of each hop's window

    @property
    def voiced(self) -> np.ndarray:
        return ~np.isnan(self.f0)


def pitch_track(x: np.ndarray, rate: int) -> PitchTrack:
    """F0 per 10 ms hop by YIN; hop ``i`` covers samples from ``i * rate * HOP_S``."""
    x = np.asarray(x, dtype=np.float64)
    width = round(rate * _WINDOW_S)
    min_lag = math.floor(rate / PITCH_MAX_HZ)
    max_lag = math.ceil(rate / PITCH_MIN_HZ)
    span = width + max_lag
    hop = round(rate * HOP_S)
    if x.size < span:
        x = np.concatenate([x, np.zeros(span - x.size)])
    frames = sliding_window_view(x, span)[::hop]
    size = 1 << (span - 1).bit_length()
    # d(tau) = e(0) + e(tau) - 2 r(tau), r by one FFT cross-correlation per frame
    head = np.fft.rfft(frames[:, :width], size)
    whole = np.fft.rfft(frames, size)
    r = np.fft.irfft(np.conj(head) * whole, size)[:, : max_lag + 1]
    squares = np.concatenate([np.zeros((frames.shape[0], 1)), np.cumsum(frames**2, axis=1)], 1)
    lags = np.arange(max_lag + 1)
    energy = squares[:, lags + width] - squares[:, lags]
    d = np.maximum(energy[:, :1] + energy - 2.0 * r, 0.0)
    # cumulative mean normalised difference
    running = np.cumsum(d[:, 1:], axis=1)
    cmnd = np.ones_like(d)
    cmnd[:, 1:] = d[:, 1:] * lags[1:] / np.maximum(running, 1e-20)
    search = cmnd[:, min_lag : max_lag + 1]
    below = search < _YIN_THRESHOLD
    found = below.any(axis=1)
    first = np.argmax(below, axis=1)
    # the minimum of the first dip under the threshold (not the global minimum: octave errors)
    after = np.arange(search.shape[1]) >= first[:, None]
    in_dip = after & below & (np.cumsum(after & ~below, axis=1) == 0)
    best = np.argmin(np.where(in_dip, search, np.inf), axis=1) + min_lag
    rows = np.arange(best.size)
    left = cmnd[rows, np.maximum(best - 1, 1)]
    mid = cmnd[rows, best]
    right = cmnd[rows, np.minimum(best + 1, max_lag)]
    curve = left - 2.0 * mid + right
    shift = np.where(curve > 0, 0.5 * (left - right) / np.where(curve > 0, curve, 1.0), 0.0)
    level = level_dbfs(frames[:, :width])
    loud = (level >= level.max() - _VOICING_RANGE_DB) & (level >= _VOICING_FLOOR_DBFS)
    f0 = np.where(found & loud, rate / (best + np.clip(shift, -1.0, 1.0)), np.nan)
    return PitchTrack(f0, level)


@dataclass(frozen=True, slots=True)
class SegmentFeatures:
    """Level and prosody of one segment; NaN where a segment has no voiced frame."""

    active_level_dbfs: float
    level_variance_db2: float  # variance of the 10 ms levels of the frames carrying speech
    f0_mean_st: float  # semitones re 100 Hz, mean over voiced frames (octave slips left out)
    f0_range_st: float  # 10th to 90th percentile of F0, semitones
    voiced_ratio: float
    nuclei_per_s: float  # speaking-rate proxy


def semitones(hz: np.ndarray) -> np.ndarray:
    return 12.0 * np.log2(hz / _SEMITONE_REFERENCE_HZ)


def segment_features(x: np.ndarray, rate: int) -> SegmentFeatures:
    duration = x.size / rate
    track = pitch_track(x, rate)
    voiced = track.voiced
    speech = track.level >= track.level.max() - _SPEECH_RANGE_DB
    st = semitones(track.f0[voiced])
    if st.size:
        # octave slips of the tracker sit an octave off the median: leave them out (two equal
        # groups far apart leave nothing: then no pitch figure can be trusted)
        st = st[np.abs(st - np.median(st)) <= _OCTAVE_SLIP_ST]
    if st.size:
        f0_mean = float(np.mean(st))
        low, high = np.percentile(st, [10, 90])
        f0_range = float(high - low)
    else:
        f0_mean = f0_range = math.nan
    return SegmentFeatures(
        active_level_dbfs=active_speech_level(x, rate),
        level_variance_db2=float(np.var(track.level[speech])),
        f0_mean_st=f0_mean,
        f0_range_st=f0_range,
        voiced_ratio=float(np.mean(voiced)),
        nuclei_per_s=_nuclei(track) / duration if duration else 0.0,
    )


def _nuclei(track: PitchTrack) -> int:
    """Voiced local maxima of the smoothed energy contour, at least 100 ms apart."""
    k = _NUCLEUS_HALF_WIDTH
    smooth = np.convolve(track.level, np.ones(5) / 5, mode="same")
    padded = np.concatenate([np.full(k, -np.inf), smooth, np.full(k, -np.inf)])
    peak = smooth >= sliding_window_view(padded, 2 * k + 1).max(axis=1)
    peak[1:] &= smooth[1:] > smooth[:-1]  # one peak per plateau
    strong = smooth >= smooth.max() - _NUCLEUS_RANGE_DB
    return int(np.sum(peak & strong & track.voiced))
