"""Segment statistics for the emotion model's linear member, as graph nodes over power spectra.

The convolutional members learn from frames; this member sees a hundred-odd statistics of the
whole segment, the kind the eGeMAPS baseline is built on: the spectral envelope and how fast it
moves, the loudness contour, and a pitch track. Pitch comes from the power spectrum the box
already computes: its inverse transform is the frame's autocorrelation, whose strongest peak
between 60 and 500 Hz gives the period, and whose height there, divided by the analysis
window's own autocorrelation (Boersma 1993, IFA Proceedings 17), says how periodic the frame
is. The anonymizer moves pitch by a few semitones per call, so the statistics that matter are
the contour's spread, slope and movement, which it keeps. Medians and quantile ranges rather
than means and deviations, because the tracker's octave errors are not rare.
Everything is torch, so the same code computes the training features and is exported to ONNX.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from gateway.models import logmel

PITCH_HZ = (60.0, 500.0)
VOICED_PEAK = 0.7  # periodicity above this: a voiced frame (lower lets octave errors in)
OCTAVE_MARGIN = 0.05  # how much more periodic twice the lag must be to take it
VOICED_RANGE = math.log(10.0**3.5)  # and no more than 35 dB below the loudest frame
COUNT = 3 * logmel.BANDS + 11  # statistics per segment


def _window_autocorrelation(lags: np.ndarray) -> np.ndarray:
    window = np.hanning(logmel.WINDOW + 2)[1:-1]
    full = np.correlate(window, window, mode="full")[logmel.WINDOW - 1 :]
    return full[lags] / full[0]


class Functionals(nn.Module):
    """(1, frames, BINS) power spectra in, (1, COUNT) statistics out; at least two frames."""

    def __init__(self) -> None:
        super().__init__()
        lags = np.arange(
            math.ceil(logmel.RATE / PITCH_HZ[1]), math.floor(logmel.RATE / PITCH_HZ[0]) + 1
        )
        bins = np.arange(logmel.BINS)
        # the one-sided spectrum counts every bin but DC and Nyquist twice
        weights = np.where((bins == 0) | (bins == logmel.BINS - 1), 1.0, 2.0) / logmel.N_FFT
        cosines = weights[:, None] * np.cos(2 * np.pi * bins[:, None] * lags[None] / logmel.N_FFT)
        self.register_buffer("filters", torch.from_numpy(logmel.FILTERS))
        self.register_buffer("cosines", torch.from_numpy(cosines.astype(np.float32)))
        self.register_buffer("zero_lag", torch.from_numpy(weights.astype(np.float32)))
        window = _window_autocorrelation(lags).astype(np.float32)
        self.register_buffer("window", torch.from_numpy(window))
        self.register_buffer("lags", torch.from_numpy(lags))
        semitones = 12.0 * np.log2(logmel.RATE / lags / 100.0)  # re 100 Hz
        self.register_buffer("semitones", torch.from_numpy(semitones.astype(np.float32)))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        p = power[0]
        bands = torch.log(p @ self.filters + logmel.FLOOR)
        bands = bands - bands.mean()
        energy = torch.log(p.sum(dim=1) + logmel.FLOOR)
        moves = bands[1:] - bands[:-1]

        # pitch: the strongest autocorrelation peak of each frame; uncorrected, the window
        # makes a multiple of the period score lower than the period (no octave drops); the
        # corrected height says how periodic the frame is, and where twice the lag is clearly
        # more periodic, the peak was half a period (an octave too high)
        r0 = p @ self.zero_lag + 1e-12
        raw = p @ self.cosines
        corrected = (raw / (r0[:, None] * self.window)).clamp(max=1.0)
        index = raw.argmax(dim=1)
        double = 2 * self.lags[index] - self.lags[0]
        inside = double < self.lags.shape[0]
        double = double.clamp(max=self.lags.shape[0] - 1)
        here = corrected.gather(1, index[:, None])[:, 0]
        there = corrected.gather(1, double[:, None])[:, 0]
        index = torch.where(inside & (there > here + OCTAVE_MARGIN), double, index)
        strength = corrected.gather(1, index[:, None])[:, 0]
        f0 = self.semitones[index]
        loud = energy > energy.max() - VOICED_RANGE
        voiced = ((strength > VOICED_PEAK) & loud).float()
        n = voiced.sum() + 1e-6
        # order statistics of the voiced frames: an octave error of the tracker moves a mean
        # or a deviation, not a median or a quartile range
        ordered, _ = torch.sort(torch.where(voiced > 0, f0, torch.full_like(f0, 1e4)))
        last = (voiced.sum() - 1).clamp(min=0)

        def quantile(q: float) -> torch.Tensor:
            value = ordered[(q * last).round().long()]
            return torch.where(voiced.sum() > 0, value, torch.zeros_like(value))

        median_f0 = quantile(0.5)
        # the slope of the contour, with octave errors pulled back towards the median
        level = median_f0 + (f0 - median_f0).clamp(min=-6.0, max=6.0)
        t = torch.arange(f0.shape[0], dtype=f0.dtype) / 100.0  # seconds at the 10 ms hop
        mean_t = (voiced * t).sum() / n
        mean_level = (voiced * level).sum() / n
        slope_f0 = (voiced * (t - mean_t) * (level - mean_level)).sum() / (
            (voiced * (t - mean_t) ** 2).sum() + 1e-3
        )
        pairs = voiced[1:] * voiced[:-1]
        # a jump of more than two semitones in 10 ms is the tracker's, not the voice's
        steps = (f0[1:] - f0[:-1]).abs().clamp(max=2.0)
        step_f0 = (pairs * steps).sum() / (pairs.sum() + 1e-6)
        harmonicity = (voiced * strength).sum() / n

        relative = energy - energy.max()
        stats = [
            voiced.mean(),
            median_f0,
            quantile(0.75) - quantile(0.25),
            quantile(0.9) - quantile(0.1),
            slope_f0,
            step_f0,
            harmonicity,
            relative.mean(),
            relative.std(unbiased=False),
            (energy[1:] - energy[:-1]).abs().mean(),
            loud.float().mean(),
        ]
        return torch.cat(
            [
                bands.mean(dim=0),
                bands.std(dim=0, unbiased=False),
                moves.abs().mean(dim=0),
                torch.stack(stats),
            ]
        )[None]


def of_audio(module: Functionals, audio: Any) -> np.ndarray:
    """The statistics of one segment at the analysis rate, as training uses them."""
    with torch.no_grad():
        power = torch.from_numpy(logmel.power_spectrum(audio)[None])
        return module(power)[0].numpy()
