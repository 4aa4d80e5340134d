"""McAdams-coefficient anonymization, VoicePrivacy Challenge baseline B2, for comparison only.

Follows the challenge's reference algorithm (Patino et al. 2021): per 20 ms frame (10 ms hop,
square-root Hann analysis and synthesis windows) an LPC model of order 20 (Burg, as
``librosa.lpc``); each complex pole pair keeps its radius and moves its angle phi to
phi ** alpha; the frame's LPC residual is filtered through the new all-pole model and the
frames are overlap-added. alpha is drawn from U[0.5, 0.9] per utterance (B2 of 2024).

Two changes: the reference scales its output to a peak of 1; here the output gets the input's
peak, so that loudness, an emotion cue, is compared on equal terms with the other systems. And
on some near-silent G.711 frames Burg's recursion returns a polynomial with a root outside the
unit circle, whose all-pole resynthesis would diverge; such poles are reflected inside
(1 / conj(p), the same magnitude response up to a gain).
"""

from __future__ import annotations

import librosa
import numpy as np
from scipy.signal import lfilter

ALPHA_RANGE = (0.5, 0.9)
ORDER = 20
WINDOW_S = 0.020
HOP_S = 0.010


def draw_alpha(rng: np.random.Generator) -> float:
    return float(rng.uniform(*ALPHA_RANGE))


def _warp_poles(lpc: np.ndarray, alpha: float) -> np.ndarray:
    poles = np.roots(lpc)
    outside = np.abs(poles) >= 1.0
    poles[outside] = 1.0 / np.conj(poles[outside])
    upper = poles.imag > 0  # one of each conjugate pair; real poles stay
    angles = np.clip(np.angle(poles[upper]) ** alpha, 0.0, np.pi)
    moved = np.abs(poles[upper]) * np.exp(1j * angles)
    new = np.concatenate([poles[poles.imag == 0], moved, moved.conj()])
    return np.real(np.poly(new))


def mcadams(x: np.ndarray, sample_rate: int, alpha: float) -> np.ndarray:
    """Anonymize a whole utterance with McAdams coefficient ``alpha``."""
    eps = np.finfo(np.float32).eps
    signal = np.asarray(x, dtype=np.float64) + eps
    width = int(WINDOW_S * sample_rate)
    hop = int(HOP_S * sample_rate)
    hann = np.hanning(width)
    window = np.sqrt(hann / (hann.sum() / hop))
    out = np.zeros(signal.size)
    # the reference loop starts at the second frame; so does this one
    for start in range(hop, signal.size - width + 1, hop):
        frame = signal[start : start + width] * window
        lpc = librosa.lpc(frame + eps, order=ORDER)
        residual = lfilter(lpc, [1.0], frame)
        rebuilt = lfilter([1.0], _warp_poles(lpc, alpha), residual)
        out[start : start + width] += rebuilt * window
    peak = np.max(np.abs(out))
    return out * (np.max(np.abs(x)) / peak) if peak > 0 else out
