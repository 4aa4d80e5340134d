"""G.722 at 64 kbit/s through the ``G722`` package (sippy/libg722, a bit-exact ITU-T coder).

G.722 is an ADPCM codec: the decoder carries state from packet to packet, so each call
direction needs its own instance. RFC 3551 keeps its RTP clock at 8000 Hz although the audio
is sampled at 16 kHz, so one tick covers two output samples.
"""

from __future__ import annotations

import numpy as np
from G722 import G722

from gateway.capture.codecs.concealment import ConcealingDecoder

_BIT_RATE = 64000


class G722Decoder(ConcealingDecoder):
    sample_rate = 16000
    samples_per_tick = 2
    __slots__ = ("_codec",)

    def __init__(self) -> None:
        super().__init__(self.sample_rate)
        self._codec = G722(self.sample_rate, _BIT_RATE)

    def duration(self, payload: bytes) -> int:
        return len(payload)  # 8 bits per 8 kHz tick at 64 kbit/s

    def _decode(self, payload: bytes) -> np.ndarray:
        return np.frombuffer(self._codec.decode(payload), dtype=np.int16)
