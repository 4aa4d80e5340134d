"""Voice anonymizer: per-call random pitch shift and spectral-envelope warp, streamed.

Each analysis frame is split into a smooth spectral envelope (low-quefrency cepstrum) and the
fine structure that carries the harmonics. The fine structure is moved in frequency by the
pitch ratio with phase-vocoder phase propagation; the envelope is warped on its own, by a
bilinear (all-pass) frequency warp that acts like a longer or shorter vocal tract, then by a
piecewise-linear warp whose knots move independently (formant regions shift by different
amounts, which a single warp factor cannot undo), is tilted, and gets smooth ripples across
the band (six cosines of the frequency axis, one to three and a half periods across it, each
with its own drawn size and sign: a resonance pattern of no speaker). Pitch and vocal-tract cues
thus move independently, by amounts drawn per call direction, while the timing, the loudness
contour (frame energy is kept) and the shape of the F0 contour (scaled by a constant) survive
for the emotion model.

Streaming: 4 ms hop, 32 ms window, so the output lags the input by 28 ms and any block whose
length is a whole number of hops (a 20 ms frame is five) can be fed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.config import AnonymizerConfig

_HOP_S = 0.004
_OVERLAP = 8
# cepstral lifter: quefrencies below 2.5 ms are the envelope; F0 below 400 Hz lies above it
_LIFTER_S = 0.0025
_TINY = 1e-9
# knots of the piecewise-linear envelope warp, as fractions of the Nyquist frequency
# (500, 1200, 1900, 2600 and 3300 Hz at 8 kHz: the F1-F4 regions of adult voices)
KNOTS = (0.125, 0.3, 0.475, 0.65, 0.825)
# cosine orders of the envelope ripples: order k has k / 2 periods across the band
RIPPLE_ORDERS = (2, 3, 4, 5, 6, 7)
# soft limiter: identity below the knee, a tanh shoulder above it that never reaches full scale
_KNEE = 0.8
_CEILING = 0.99


@dataclass(frozen=True, slots=True)
class AnonymizerParams:
    """The disguise of one call direction."""

    pitch_ratio: float  # F0 multiplier (2 ** (semitones / 12))
    warp: float  # bilinear warp coefficient; > 0 lowers formants, < 0 raises them
    tilt_db: float  # spectral tilt added across the band, dB at Nyquist relative to DC
    knot_shifts: tuple[float, ...] = (0.0,) * len(KNOTS)  # relative move of each knot
    ripple_db: tuple[float, ...] = (0.0,) * len(RIPPLE_ORDERS)  # amplitude of each ripple


def draw_params(rng: np.random.Generator, config: AnonymizerConfig) -> AnonymizerParams:
    """Draw a disguise from the configured ranges; the direction of each shift is random."""

    def signed(bounds: list[float]) -> float:
        magnitude = rng.uniform(bounds[0], bounds[1])
        return float(magnitude if rng.random() < 0.5 else -magnitude)

    return AnonymizerParams(
        pitch_ratio=float(2.0 ** (signed(config.pitch_semitones) / 12.0)),
        warp=signed(config.formant_warp),
        tilt_db=signed(config.tilt_db),
        knot_shifts=tuple(signed(config.formant_jitter) for _ in KNOTS),
        ripple_db=tuple(signed(config.ripple_db) for _ in RIPPLE_ORDERS),
    )


def warp_positions(bins: int, warp: float, knot_shifts: tuple[float, ...]) -> np.ndarray:
    """Fractional source bin for each output bin under the bilinear then the knot warp."""
    omega = np.linspace(0.0, np.pi, bins)
    bilinear = omega + 2.0 * np.arctan2(warp * np.sin(omega), 1.0 - warp * np.cos(omega))
    knots = np.array([0.0, *KNOTS, 1.0])
    moved = np.array([0.0, *(np.array(KNOTS) * (1.0 + np.array(knot_shifts))), 1.0])
    # neighbouring knots may cross at large shifts; the warp must stay monotonic
    moved = np.maximum.accumulate(np.minimum(moved, 1.0))
    return np.interp(bilinear / np.pi, knots, moved) * (bins - 1)


def _interpolator(positions: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower index, weight of the upper one, and which positions fall inside the spectrum."""
    inside = positions <= bins - 1
    clipped = np.clip(positions, 0.0, bins - 1)
    low = np.minimum(np.floor(clipped).astype(np.intp), bins - 2)
    return low, clipped - low, inside


def _gather(values: np.ndarray, low: np.ndarray, frac: np.ndarray) -> np.ndarray:
    return values[:, low] * (1.0 - frac) + values[:, low + 1] * frac


def _soft_limit(y: np.ndarray) -> np.ndarray:
    over = np.abs(y) > _KNEE
    if not over.any():
        return y
    room = _CEILING - _KNEE
    shoulder = _KNEE + room * np.tanh((np.abs(y) - _KNEE) / room)
    return np.where(over, np.sign(y) * shoulder, y)


class Anonymizer:
    """Streams one call direction through one disguise; feed blocks, then ``flush``."""

    __slots__ = (
        "_env_frac",
        "_env_low",
        "_expected",
        "_hop",
        "_lifter",
        "_norm",
        "_ola",
        "_phase_in",
        "_phase_out",
        "_ratio",
        "_shape",
        "_size",
        "_src_frac",
        "_src_inside",
        "_src_low",
        "_src_nearest",
        "_tail",
        "_window",
        "latency",
    )

    def __init__(self, params: AnonymizerParams, sample_rate: int = 8000) -> None:
        hop = sample_rate * _HOP_S
        if sample_rate <= 0 or hop != int(hop):
            raise ValueError(
                f"sample rate {sample_rate} Hz is not supported: use a multiple of 250 Hz "
                "such as 8000 (the telephone rate the anonymizer runs at)"
            )
        if (
            not 0.5 <= params.pitch_ratio <= 2.0
            or not -0.5 < params.warp < 0.5
            or len(params.knot_shifts) != len(KNOTS)
            or not all(-0.5 < d < 0.5 for d in params.knot_shifts)
            or len(params.ripple_db) != len(RIPPLE_ORDERS)
            or not all(abs(r) <= 12.0 for r in params.ripple_db)
        ):
            raise ValueError(f"{params} is outside the supported disguise (draw it from config)")
        self._hop = int(hop)
        self._size = self._hop * _OVERLAP
        self.latency = self._size - self._hop
        bins = self._size // 2 + 1
        self._lifter = round(sample_rate * _LIFTER_S)
        # periodic Hann for analysis and synthesis; the squared window sums to a constant
        self._window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(self._size) / self._size)
        self._norm = float(np.sum(self._window**2) / self._hop)
        self._expected = 2.0 * np.pi * self._hop * np.arange(bins) / self._size
        self._ratio = params.pitch_ratio
        pitch_positions = np.arange(bins) / params.pitch_ratio
        self._src_low, self._src_frac, self._src_inside = _interpolator(pitch_positions, bins)
        self._src_nearest = np.minimum(np.rint(pitch_positions).astype(np.intp), bins - 1)
        self._env_low, self._env_frac, _ = _interpolator(
            warp_positions(bins, params.warp, params.knot_shifts), bins
        )
        # tilt and ripples are fixed log-gains per bin (nepers), added to the warped envelope
        omega = np.linspace(0.0, np.pi, bins)
        shape_db = params.tilt_db * omega / np.pi
        for order, amplitude in zip(RIPPLE_ORDERS, params.ripple_db, strict=True):
            shape_db = shape_db + amplitude * np.cos(order * omega)
        self._shape = np.log(10.0) / 20.0 * shape_db
        self._tail = np.zeros(self.latency)
        self._ola = np.zeros(self.latency)
        self._phase_in = np.zeros(bins)
        self._phase_out = np.zeros(bins)

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Anonymize a block; returns as many samples, ``latency`` samples behind the input."""
        block = np.asarray(frame, dtype=np.float64)
        if block.ndim != 1 or block.size % self._hop:
            raise ValueError(
                f"expected a mono block of a multiple of {self._hop} samples "
                f"(20 ms frames), got shape {block.shape}"
            )
        return self._run(np.nan_to_num(block, nan=0.0, posinf=1.0, neginf=-1.0))

    def flush(self) -> np.ndarray:
        """The last ``latency`` samples of the call direction."""
        return self._run(np.zeros(self.latency))

    def _run(self, block: np.ndarray) -> np.ndarray:
        count = block.size // self._hop
        if count == 0:
            return np.zeros(0, dtype=np.float32)
        signal = np.concatenate([self._tail, block])
        starts = np.arange(count)[:, None] * self._hop
        frames = signal[starts + np.arange(self._size)] * self._window
        out = np.fft.irfft(self._transform(np.fft.rfft(frames)), self._size) * self._window
        ola = np.concatenate([self._ola, np.zeros(block.size)])
        for i in range(count):
            ola[i * self._hop : i * self._hop + self._size] += out[i]
        self._tail = signal[-self.latency :]
        self._ola = ola[block.size :]
        return _soft_limit(ola[: block.size] / self._norm).astype(np.float32)

    def _transform(self, spectra: np.ndarray) -> np.ndarray:
        magnitude = np.abs(spectra)
        log_mag = np.log(magnitude + _TINY)
        cepstrum = np.fft.irfft(log_mag, self._size)
        cepstrum[:, self._lifter : self._size - self._lifter + 1] = 0.0
        envelope = np.fft.rfft(cepstrum).real
        fine = _gather(log_mag - envelope, self._src_low, self._src_frac)
        fine = np.where(self._src_inside, fine, np.log(_TINY))
        shaped = fine + _gather(envelope, self._env_low, self._env_frac) + self._shape
        new_mag = np.exp(shaped)
        # keep each frame's energy: the loudness contour is an emotion cue
        energy_in = np.sum(magnitude**2, axis=1, keepdims=True)
        energy_out = np.sum(new_mag**2, axis=1, keepdims=True)
        new_mag *= np.sqrt(energy_in / (energy_out + _TINY))

        phase = np.angle(spectra)
        previous = np.vstack([self._phase_in, phase[:-1]])
        deviation = phase - previous - self._expected
        deviation -= 2.0 * np.pi * np.round(deviation / (2.0 * np.pi))
        advance = (self._expected + deviation)[:, self._src_nearest] * self._ratio
        new_phase = self._phase_out + np.cumsum(advance, axis=0)
        self._phase_in = phase[-1]
        self._phase_out = np.mod(new_phase[-1], 2.0 * np.pi)
        return new_mag * np.exp(1j * new_phase)


def disguise(x: np.ndarray, params: AnonymizerParams, sample_rate: int = 8000) -> np.ndarray:
    """A whole recording through the anonymizer with ``params``, aligned and the same length.

    The recording is one block: the anonymizer's output does not depend on how it is cut.
    """
    anonymizer = Anonymizer(params, sample_rate)
    hop = int(sample_rate * _HOP_S)
    padded = np.concatenate([x, np.zeros(-x.size % hop)]).astype(np.float32)
    out = np.concatenate([anonymizer.process(padded), anonymizer.flush()])
    return out[anonymizer.latency : anonymizer.latency + x.size]
