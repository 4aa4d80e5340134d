"""G.711 A-law and µ-law decoding, and the packet loss concealment the decoders share.

The decoding tables are computed from the ITU-T G.711 definition (segment and quantization
step of every 8-bit code, reconstruction at the middle of the step) and scaled to 16 bits;
decoding a packet is one numpy fancy-index into a 256-entry table.
"""

from __future__ import annotations

from collections import deque

import numpy as np

_CODES = np.arange(256, dtype=np.int32)


def _alaw_table() -> np.ndarray:
    # Even bits are inverted on the wire (G.711 table 1, note). Sign bit 1 means positive.
    code = _CODES ^ 0x55
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    # 13-bit magnitude: segment 0 is linear, segment s > 0 spans [2^(s+4), 2^(s+5)).
    magnitude = np.where(segment == 0, 2 * step + 1, (2 * step + 33) << np.maximum(segment - 1, 0))
    magnitude = magnitude << 3  # 13-bit scale to 16-bit
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_table() -> np.ndarray:
    # All bits are inverted on the wire; after inversion sign bit 1 means negative.
    code = ~_CODES & 0xFF
    segment = (code >> 4) & 0x07
    step = code & 0x0F
    # 14-bit magnitude with the bias of 33 that makes every segment start on a power of two.
    magnitude = ((2 * step + 33) << segment) - 33
    magnitude = magnitude << 2  # 14-bit scale to 16-bit
    return np.where(code & 0x80, -magnitude, magnitude).astype(np.int16)


ALAW_TABLE = _alaw_table()
ULAW_TABLE = _ulaw_table()


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


class G711Decoder:
    """G.711 at 8 kHz: one RTP tick per byte per sample."""

    sample_rate = 8000
    samples_per_tick = 1

    __slots__ = ("_plc", "_table")

    def __init__(self, table: np.ndarray) -> None:
        self._table = table
        self._plc = PitchConcealer(self.sample_rate)

    def duration(self, payload: bytes) -> int:
        return len(payload)

    def decode(self, payload: bytes) -> np.ndarray:
        pcm = self._table[np.frombuffer(payload, dtype=np.uint8)]
        self._plc.remember(pcm)
        return pcm

    def conceal(self, n_samples: int) -> np.ndarray:
        return self._plc.conceal(n_samples)

    def forget(self) -> None:
        self._plc.forget()


def alaw_decoder() -> G711Decoder:
    return G711Decoder(ALAW_TABLE)


def ulaw_decoder() -> G711Decoder:
    return G711Decoder(ULAW_TABLE)
