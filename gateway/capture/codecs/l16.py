"""L16 (RFC 3551 section 4.5.11): big-endian 16-bit linear PCM at any clock rate.

Multi-channel payloads are interleaved frames; they are mixed down to mono by averaging the
channels, so that a voice present on only one channel is kept (at half level) rather than
lost with the channel that is dropped.
"""

from __future__ import annotations

import numpy as np

from gateway.capture.codecs.concealment import ConcealingDecoder

_BIG_ENDIAN_INT16 = np.dtype(">i2")


class L16Decoder(ConcealingDecoder):
    __slots__ = ("_channels", "_frame_bytes", "sample_rate")

    def __init__(self, clock_rate: int, channels: int) -> None:
        super().__init__(clock_rate)
        self.sample_rate = clock_rate
        self._channels = channels
        self._frame_bytes = 2 * channels

    def duration(self, payload: bytes) -> int:
        return len(payload) // self._frame_bytes

    def _decode(self, payload: bytes) -> np.ndarray:
        # a trailing partial frame cannot be placed in time: it is ignored
        usable = len(payload) - len(payload) % self._frame_bytes
        samples = np.frombuffer(payload, dtype=_BIG_ENDIAN_INT16, count=usable // 2)
        if self._channels == 1:
            return samples.astype(np.int16)
        frames = samples.reshape(-1, self._channels).astype(np.int32)
        return (frames.sum(axis=1) // self._channels).astype(np.int16)
