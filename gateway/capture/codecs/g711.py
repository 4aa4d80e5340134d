"""G.711 A-law and µ-law decoding.

The decoding tables are computed from the ITU-T G.711 definition (segment and quantization
step of every 8-bit code, reconstruction at the middle of the step) and scaled to 16 bits;
decoding a packet is one numpy fancy-index into a 256-entry table.
"""

from __future__ import annotations

import numpy as np

from gateway.capture.codecs.concealment import ConcealingDecoder

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


class G711Decoder(ConcealingDecoder):
    """G.711 at 8 kHz: one RTP tick per byte per sample."""

    sample_rate = 8000
    __slots__ = ("_table",)

    def __init__(self, table: np.ndarray) -> None:
        super().__init__(self.sample_rate)
        self._table = table

    def duration(self, payload: bytes) -> int:
        return len(payload)

    def _decode(self, payload: bytes) -> np.ndarray:
        return self._table[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decoder() -> G711Decoder:
    return G711Decoder(ALAW_TABLE)


def ulaw_decoder() -> G711Decoder:
    return G711Decoder(ULAW_TABLE)
