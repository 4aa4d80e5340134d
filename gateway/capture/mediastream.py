"""One direction of one call: RTP packets in, trimmed and decoded mono PCM out.

The output is one continuous timeline at :attr:`MediaStream.sample_rate`, laid out by RTP
timestamps: every packet lands where its timestamp says, relative to the first packet.

- Sequence gaps (loss) are filled by the decoder's concealment; timestamp gaps without a
  sequence gap (silence suppression, DTX) with silence, or with comfort noise after a CN
  packet. A fill never exceeds ``max_gap_seconds``: beyond it the timeline simply continues.
- Telephone events (RFC 4733) are never decoded: they are counted and the time they cover is
  silence; audio packets overlapping time already played (an in-band copy of the tone under
  an event, a repeated timestamp) lose the overlapping part. A packet more than 0.5 s behind
  is a timestamp reset and starts a new timestamp base.
- An SSRC change or a sequence restart starts a new sequence and timestamp base; the output
  timeline continues where it was.
- Trim: the first ``trim_seconds`` of the timeline are discarded before decoding. A packet
  entirely inside the window never reaches a decoder; a packet straddling its end is decoded,
  its head cut, and the decoder's concealment history dropped so no trimmed sample outlives
  the packet. The window is measured on the timeline, where a gap counts at most
  ``max_gap_seconds``, so no timestamp jump can end it early.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np

from gateway.capture.codecs import (
    COMFORT_NOISE,
    TELEPHONE_EVENT,
    CodecDescription,
    Decoder,
    decoder_for,
)
from gateway.capture.jitterbuffer import JitterBuffer, Playout
from gateway.capture.rtp import RtpPacket
from gateway.events import DirectionStats, Undecodable

_AUDIO, _EVENT, _NOISE, _UNSUPPORTED, _UNKNOWN = range(5)
_TS_MOD = 1 << 32
_TS_HALF = 1 << 31
_DEFAULT_RATE = 8000  # G.711, when SDP names no decodable codec
_SILENT_LEVEL = 127  # RFC 3389 noise level in -dBov that means no noise at all
_NOISE_SEED = 3389  # comfort noise is reproducible: replaying a capture gives the same output
# A packet starting further behind the played audio than this is a sender's timestamp reset,
# not an overlap (in-band audio under an event, a repeated timestamp): it starts a new base.
_MAX_OVERLAP_SECONDS = 0.5


class _Route:
    """What to do with one payload type in the current stream base."""

    __slots__ = ("clock", "decoder", "kind", "rate")

    def __init__(self, kind: int, clock: int, rate: int, decoder: Decoder | None) -> None:
        self.kind = kind
        self.clock = clock  # RTP clock of the payload type
        self.rate = rate  # output sample rate: timestamps convert as ticks * rate // clock
        self.decoder = decoder


class MediaStream:
    """Playout of one call direction.

    ``codecs`` maps payload types to codecs as negotiated in SDP. The output rate is the
    sample rate of the first codec in it that has a decoder (SDP lists the preferred codec
    first), 8000 Hz if none has; audio of a codec at another rate after a re-negotiation is
    converted by linear interpolation. A payload type whose codec has no decoder sets
    ``undecodable`` and is counted; one that SDP never named is only counted. Neither adds
    anything to the timeline. Telephone events count once per event (RFC 4733: one
    timestamp per event). Comfort noise is white noise whose RMS is the RFC 3389 level in
    -dBov relative to 32767; the spectral coefficients of a CN payload are ignored.
    ``counters`` names the anomalies met (late packets, sequence restarts, overlaps, ...).
    """

    def __init__(
        self,
        codecs: Mapping[int, CodecDescription],
        trim_seconds: float = 0.0,
        jitter_depth: int = 6,
        max_gap_seconds: float = 2.0,
    ) -> None:
        if trim_seconds < 0 or max_gap_seconds < 0:
            raise ValueError("trim_seconds and max_gap_seconds must not be negative")
        self._codecs = dict(codecs)
        self.sample_rate = _output_rate(self._codecs.values())
        self._trim_end = round(trim_seconds * self.sample_rate)
        self._max_gap = round(max_gap_seconds * self.sample_rate)
        self._max_overlap = round(_MAX_OVERLAP_SECONDS * self.sample_rate)
        self.counters: Counter[str] = Counter()
        self._jitter = JitterBuffer(jitter_depth, counters=self.counters)
        self.undecodable: Undecodable | None = None
        self._routes: dict[int, _Route] = {}
        self._ssrc: int | None = None
        self._next_ts: int | None = None  # RTP timestamp where the played audio ends
        self._pos = 0  # timeline samples since the first packet, trimmed ones included
        self._noise_rms = 0.0  # level of the fill for gaps without loss: 0 is silence
        self._last_decoder: Decoder | None = None  # None while the timeline is not audio
        self._last_event: tuple[int, int] | None = None
        self._loss_pending = False
        self._rng = np.random.default_rng(_NOISE_SEED)
        self._packets = 0
        self._events = 0
        self._decoded = 0
        self._concealed = 0
        self._trimmed = 0

    @property
    def stats(self) -> DirectionStats:
        """Counts so far; the role is the caller's to fill in."""
        return DirectionStats(
            packets=self._packets,
            lost=self._jitter.lost,
            duplicates=self._jitter.duplicates,
            concealed_samples=self._concealed,
            decoded_samples=self._decoded,
            trimmed_samples=self._trimmed,
            telephone_events=self._events,
        )

    def push(self, packet: RtpPacket) -> list[np.ndarray]:
        """Take one packet in arrival order; return the PCM now due, in playout order."""
        self._packets += 1
        route = self._route(packet.payload_type)
        kind = route.kind
        if kind == _EVENT:
            key = (packet.ssrc, packet.timestamp)
            if key != self._last_event:
                self._last_event = key
                self._events += 1
        elif kind == _UNSUPPORTED:
            self.counters["codec.unsupported"] += 1
            self.undecodable = Undecodable.CODEC
        elif kind == _UNKNOWN:
            self.counters["rtp.unknown_payload_type"] += 1
        if packet.ssrc == self._ssrc:
            return self._play(self._jitter.push(packet))
        if self._ssrc is None:
            self._ssrc = packet.ssrc
            return self._play(self._jitter.push(packet))
        if kind != _AUDIO and kind != _NOISE:
            # events sent under an SSRC of their own, or a source with nothing decodable,
            # carry no audio timeline: they must not interrupt the current source
            self.counters["rtp.foreign_ssrc"] += 1
            return []
        self.counters["rtp.ssrc_change"] += 1
        out = self._play(self._jitter.flush())
        self._ssrc = packet.ssrc
        self._new_base()
        return self._play(self._jitter.push(packet), out)

    def flush(self) -> list[np.ndarray]:
        """End of the direction: play what the jitter buffer still holds."""
        return self._play(self._jitter.flush())

    # -- playout -------------------------------------------------------------------------

    def _play(
        self, playouts: Iterable[Playout], out: list[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        if out is None:
            out = []
        for playout in playouts:
            if playout.restart:
                self._new_base()
            self._place(playout.packet, playout.lost > 0, out)
        return out

    def _new_base(self) -> None:
        self._next_ts = None
        self._loss_pending = False
        self._routes.clear()  # fresh decoders: a new source starts a new codec state
        self._last_decoder = None
        self._noise_rms = 0.0

    def _place(self, packet: RtpPacket, lost: bool, out: list[np.ndarray]) -> None:
        route = self._route(packet.payload_type)
        kind = route.kind
        lost = lost or self._loss_pending
        if kind in (_UNSUPPORTED, _UNKNOWN):
            # nothing to place: its time becomes part of the next packet's gap, and so does
            # a loss just before it
            self._loss_pending = lost
            return
        self._loss_pending = False
        timestamp = packet.timestamp
        expected = self._next_ts
        if expected is None:
            expected = self._next_ts = timestamp
        ahead = (timestamp - expected + _TS_HALF) % _TS_MOD - _TS_HALF
        if kind == _AUDIO:
            self._place_audio(packet, route, ahead, lost, out)
            return
        if ahead > 0:
            self._fill(ahead * route.rate // route.clock, lost, out)
            self._next_ts = timestamp
        if kind == _EVENT:
            payload = packet.payload
            if len(payload) < 4:
                self.counters["event.short"] += 1
                return
            self._last_decoder = None
            self._noise_rms = 0.0
            end = (timestamp + int.from_bytes(payload[2:4], "big")) % _TS_MOD
            beyond = (end - self._next_ts + _TS_HALF) % _TS_MOD - _TS_HALF
            if beyond > 0:
                self._fill(beyond * route.rate // route.clock, False, out)
                self._next_ts = end
        elif kind == _NOISE:
            level = packet.payload[0] if packet.payload else _SILENT_LEVEL
            self._noise_rms = 0.0 if level >= _SILENT_LEVEL else 32767.0 * 10 ** (-level / 20)
            self._last_decoder = None

    def _place_audio(
        self, packet: RtpPacket, route: _Route, ahead: int, lost: bool, out: list[np.ndarray]
    ) -> None:
        decoder = route.decoder
        assert decoder is not None
        ticks = decoder.duration(packet.payload)
        n = ticks * route.rate // route.clock
        cut = 0
        if ahead > 0:
            self._fill(ahead * route.rate // route.clock, lost, out)
        elif ahead < 0:
            behind = -ahead * route.rate // route.clock
            if behind > self._max_overlap:
                self.counters["rtp.timestamp_reset"] += 1
            elif behind >= n:
                self.counters["rtp.overlap_dropped"] += 1
                return
            else:
                self.counters["rtp.overlap_cut"] += 1
                cut = behind
        self._next_ts = (packet.timestamp + ticks) % _TS_MOD
        self._noise_rms = 0.0
        self._last_decoder = decoder
        fresh = n - cut
        trimmed = min(fresh, max(0, self._trim_end - self._pos))
        self._pos += fresh
        self._trimmed += trimmed
        if trimmed == fresh:
            return  # entirely inside the trim window: never decoded
        pcm = decoder.decode(packet.payload)
        if trimmed:
            decoder.forget()  # trimmed samples must not live on as concealment material
        if len(pcm) != n:  # another codec's rate than the stream's
            pcm = _resample(pcm, n)
        if cut or trimmed:
            pcm = pcm[cut + trimmed :]
        self._decoded += len(pcm)
        out.append(pcm)

    def _fill(self, n: int, lost: bool, out: list[np.ndarray]) -> None:
        """Cover ``n`` timeline samples that no packet brought."""
        if n > self._max_gap:
            self.counters["gap.capped"] += 1
            n = self._max_gap
        trimmed = min(n, max(0, self._trim_end - self._pos))
        self._pos += n
        self._trimmed += trimmed
        if trimmed == n:
            return
        decoder = self._last_decoder
        if lost and decoder is not None:
            wanted = -(-n * decoder.sample_rate // self.sample_rate)
            pcm = decoder.conceal(wanted)
            if len(pcm) != n:
                pcm = _resample(pcm, n)
        elif self._noise_rms > 0:
            noise = self._rng.normal(0.0, self._noise_rms, n)
            pcm = np.clip(noise, -32768, 32767).astype(np.int16)
        else:
            pcm = np.zeros(n, dtype=np.int16)
        pcm = pcm[trimmed:]
        if lost:
            self._concealed += len(pcm)
        out.append(pcm)

    def _route(self, payload_type: int) -> _Route:
        route = self._routes.get(payload_type)
        if route is not None:
            return route
        codec = self._codecs.get(payload_type)
        rate = self.sample_rate
        if codec is None:
            route = _Route(_UNKNOWN, rate, rate, None)
        elif codec.clock_rate <= 0:
            route = _Route(_UNSUPPORTED, rate, rate, None)
        else:
            encoding = codec.encoding.upper()
            decoder = None
            if encoding == TELEPHONE_EVENT:
                kind = _EVENT
            elif encoding == COMFORT_NOISE:
                kind = _NOISE
            else:
                decoder = decoder_for(codec)
                kind = _AUDIO if decoder is not None else _UNSUPPORTED
            route = _Route(kind, codec.clock_rate, rate, decoder)
        self._routes[payload_type] = route
        return route


def _output_rate(codecs: Iterable[CodecDescription]) -> int:
    """The rate of the first decodable codec: SDP lists the preferred codec first."""
    for codec in codecs:
        decoder = decoder_for(codec)
        if decoder is not None:
            return decoder.sample_rate
    return _DEFAULT_RATE


def _resample(pcm: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation to ``n`` samples: only for a codec change to another rate."""
    if n <= 0 or len(pcm) == 0:
        return np.zeros(max(n, 0), dtype=np.int16)
    positions = np.linspace(0, len(pcm) - 1, n)
    return np.interp(positions, np.arange(len(pcm)), pcm).astype(np.int16)
