"""Audio decoders for the codecs a PBX mirror carries, chosen from an SDP codec description.

Supported: G.711 A-law and µ-law, G.722 at 64 kbit/s, L16. Everything else (G.729, Opus, GSM,
iLBC, Speex, G.726, LPC, ...) has no decoder: :func:`decoder_for` returns None and the caller
reports the call as undecodable. Every call direction gets its own decoder instance, because
G.722 and the loss concealment keep state between packets.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from gateway.capture.codecs.g711 import alaw_decoder, ulaw_decoder
from gateway.capture.codecs.g722 import G722Decoder
from gateway.capture.codecs.l16 import L16Decoder

TELEPHONE_EVENT = "TELEPHONE-EVENT"
COMFORT_NOISE = "CN"
# L16 beyond these is no telephony audio; an SDP claiming it must not size our buffers
_L16_RATES = (8000, 192000)
_L16_MAX_CHANNELS = 8


class CodecDescription(Protocol):
    """What SDP says about one payload type (``gateway.capture.sdp.Codec`` fits)."""

    @property
    def encoding(self) -> str: ...

    @property
    def clock_rate(self) -> int: ...

    @property
    def channels(self) -> int: ...


class Decoder(Protocol):
    """Turns the payloads of one RTP stream into mono int16 PCM at ``sample_rate``."""

    sample_rate: int
    samples_per_tick: int  # output samples per RTP clock tick (2 for G.722)

    def duration(self, payload: bytes) -> int:
        """RTP clock ticks the payload covers, known without decoding it."""
        ...

    def decode(self, payload: bytes) -> np.ndarray: ...

    def conceal(self, n_samples: int) -> np.ndarray:
        """Stand-in audio for lost packets, continuing from the last decoded audio."""
        ...

    def forget(self) -> None:
        """Drop the decoded audio kept for concealment (it held trimmed samples)."""
        ...


def decoder_for(codec: CodecDescription) -> Decoder | None:
    """A new decoder for ``codec``, or None when the codec is not supported."""
    encoding = codec.encoding.upper()
    if encoding in ("PCMA", "PCMU", "G722"):
        if codec.clock_rate != 8000 or codec.channels != 1:
            return None
        if encoding == "PCMA":
            return alaw_decoder()
        if encoding == "PCMU":
            return ulaw_decoder()
        return G722Decoder()
    rate_ok = _L16_RATES[0] <= codec.clock_rate <= _L16_RATES[1]
    if encoding == "L16" and rate_ok and 1 <= codec.channels <= _L16_MAX_CHANNELS:
        return L16Decoder(codec.clock_rate, codec.channels)
    return None
