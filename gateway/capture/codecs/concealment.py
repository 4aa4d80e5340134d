"""Packet loss concealment, and the base that every decoder shares to feed it."""

from __future__ import annotations

from collections import deque

import numpy as np


class PitchConcealer:
    """Packet loss concealment by pitch-period repetition, after ITU-T G.711 Appendix I.

    What it keeps from Appendix I: the pitch period is searched between 5 and 15 ms (66-200
    Hz) by normalised cross-correlation of the most recent audio with the audio one period
    earlier; the erasure is filled by repeating the last period; the first 10 ms keep full
    level, then the level falls linearly by 20 % per 10 ms, reaching silence at 60 ms; a
    longer erasure stays silent. What it leaves out: Appendix I delays the output by 3.75 ms
    to overlap-add the splice into already decoded audio and cross-fades into the first good
    frame after the erasure. Here received audio is never altered, so every packet that
    arrives decodes bit-exactly; the price is a possible small step at the two splices.
    """

    __slots__ = (
        "_elapsed", "_held", "_history", "_history_len", "_max_lag", "_min_lag", "_period", "_rate",
    )  # fmt: skip

    def __init__(self, sample_rate: int) -> None:
        self._rate = sample_rate
        self._min_lag = max(1, sample_rate // 200)
        self._max_lag = max(self._min_lag + 1, sample_rate * 15 // 1000)
        self._history_len = 3 * self._max_lag
        self._history: deque[np.ndarray] = deque()  # recent decoded blocks, newest last
        self._held = 0  # samples in _history
        self._period: np.ndarray | None = None
        self._elapsed = 0  # samples concealed in the current erasure

    def remember(self, pcm: np.ndarray) -> None:
        """Keep decoded audio as the source of the next concealment; ends any erasure."""
        history = self._history
        history.append(pcm)
        self._held += len(pcm)
        while self._held - len(history[0]) >= self._history_len:
            self._held -= len(history.popleft())
        self._period = None
        self._elapsed = 0

    def forget(self) -> None:
        """Drop the kept audio: the next erasure, if no audio comes first, is silence."""
        self._history.clear()
        self._held = 0
        self._period = None
        self._elapsed = 0

    def conceal(self, n_samples: int) -> np.ndarray:
        if n_samples <= 0:
            return np.zeros(0, dtype=np.int16)
        if self._period is None:
            self._period = self._last_period()
        period = self._period
        start = self._elapsed
        self._elapsed += n_samples
        if period is None:
            return np.zeros(n_samples, dtype=np.int16)
        index = np.arange(start, start + n_samples)
        ten_ms = self._rate / 100
        gain = np.clip(1.0 - 0.2 * (index - ten_ms) / ten_ms, 0.0, 1.0)
        wave = period[index % len(period)]
        return (wave * gain).astype(np.int16)

    def _last_period(self) -> np.ndarray | None:
        if not self._history:
            return None
        audio = np.concatenate(self._history)[-self._history_len :].astype(np.float64)
        window = self._max_lag
        if len(audio) < window + self._min_lag:
            return None
        if not audio.any():
            return None
        recent = audio[-window:]
        max_lag = min(self._max_lag, len(audio) - window)
        lags = np.arange(self._min_lag, max_lag + 1)
        # candidates[i] is the window that ends lags[i] samples before the newest sample
        frames = np.lib.stride_tricks.sliding_window_view(audio, window)
        candidates = frames[len(frames) - 1 - lags]
        energy = np.einsum("ij,ij->i", candidates, candidates)
        score = (candidates @ recent) / np.sqrt(np.maximum(energy, 1e-9))
        lag = int(lags[int(np.argmax(score))])
        return audio[-lag:].copy()


class ConcealingDecoder:
    """Base of the decoders: what they decode is kept as the source of the next concealment."""

    __slots__ = ("_plc",)
    sample_rate: int
    samples_per_tick = 1  # output samples per RTP clock tick

    def __init__(self, sample_rate: int) -> None:
        self._plc = PitchConcealer(sample_rate)

    def decode(self, payload: bytes) -> np.ndarray:
        pcm = self._decode(payload)
        self._plc.remember(pcm)
        return pcm

    def _decode(self, payload: bytes) -> np.ndarray:
        raise NotImplementedError

    def conceal(self, n_samples: int) -> np.ndarray:
        return self._plc.conceal(n_samples)

    def forget(self) -> None:
        self._plc.forget()
