"""Log-mel front-end of the emotion model, in numpy.

The box hears telephone audio (G.711, 8 kHz) that the dsp chain hands on at the 16 kHz
analysis rate, so nothing above 4 kHz carries information: the filterbank stops at 3.8 kHz,
below the telephone channel's upper edge, and above 50 Hz. Training computes ``log_mel``; the box
computes ``power_spectrum`` and the exported graph applies the same filters, logarithm and
mean removal, so the network sees the features it was trained on.
"""

from __future__ import annotations

import numpy as np

RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms: 100 frames per second
N_FFT = 512
BANDS = 40
F_MIN = 50.0
F_MAX = 3800.0
# power floor: below the A-law idle-channel noise, so silence does not produce -inf or
# dominate the statistics
FLOOR = 1e-6


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _filterbank() -> np.ndarray:
    """Triangular HTK-mel filters, (BINS, BANDS), unit height."""
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array(F_MIN)), _hz_to_mel(np.array(F_MAX)), BANDS + 2)
    )
    freqs = np.arange(N_FFT // 2 + 1) * RATE / N_FFT
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - low) / (centre - low)
    falling = (high - freqs) / (high - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).T.astype(np.float32)


FILTERS = _filterbank()
BINS = N_FFT // 2 + 1
_WINDOW = np.hanning(WINDOW + 2)[1:-1].astype(np.float32)


def frame_count(samples: int) -> int:
    """How many frames the front-end makes of ``samples`` samples."""
    return 0 if samples < WINDOW else 1 + (samples - WINDOW) // HOP


def power_spectrum(x: np.ndarray) -> np.ndarray:
    """Short-time power spectrum of mono float audio at ``RATE``: (frames, BINS) float32.

    This is what the box computes in numpy; the mel projection, the logarithm and the mean
    removal are the first nodes of the ONNX graph, so that no numpy matrix product (and no
    multi-threaded BLAS spinning on a shared core) sits on the inference path.
    """
    frames = frame_count(x.size)
    if frames == 0:
        return np.zeros((0, BINS), dtype=np.float32)
    view = np.lib.stride_tricks.sliding_window_view(np.asarray(x, np.float32), WINDOW)[::HOP]
    spectrum = np.fft.rfft(view[:frames] * _WINDOW, N_FFT)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32)


def log_mel(x: np.ndarray) -> np.ndarray:
    """Log-mel energies, (frames, BANDS) float32: the network's input, as the graph makes it.

    The segment's mean is subtracted: the line's gain differs from call to call and carries
    nothing about the speaker's state, while the loudness contour inside the segment does.
    """
    energies = np.log(power_spectrum(x) @ FILTERS + FLOOR)
    return energies - energies.mean() if energies.size else energies
