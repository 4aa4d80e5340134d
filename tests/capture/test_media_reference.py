"""Every plain G.711 stream of the shared captures, decoded by MediaStream and checked sample
for sample against an independent decoding: tshark's RTP dissection laid out by RTP timestamp
and decoded with audioop.

MediaStream gets its packets from the project's own packet layer (pcap reader, frame and IP
decoding, ``parse_rtp``); the reference never touches project code.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gateway.capture.mediastream import MediaStream
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import CaptureReader
from gateway.capture.rtp import RtpError, is_rtcp, parse_rtp
from gateway.capture.sdp import Codec
from tests.capture.tshark_reference import RtpRow, TsharkRtp, tshark_capture

with warnings.catch_warnings():  # the independent G.711 decoder; audioop-lts from 3.13 on
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Direction = tuple[str, int, str, int]
_G711 = {0: audioop.ulaw2lin, 8: audioop.alaw2lin}
_CN = 13
_RATE = 8000
_MAX_GAP_SECONDS = 60.0  # longer than any gap in the captures: nothing is capped
_OVERLAP_SAMPLES = _RATE // 2  # MediaStream's documented limit between overlap and reset

# Every capture with plain G.711 media. SRTP captures (SIP-SRTP-..., SIP-over-TLS-RSA-SRTP-...,
# marseillaise-srtp.pcap) are left out; Asterisk_ZFONE_XLITE.pcap only with its packets sent
# before ZRTP switched the media to SRTP (a 4-byte tag makes those payloads 164 bytes).
CAPTURES = [
    "SIP-RTP-Normal_Call_two_parties.pcap",
    "SIP-over-TLS-RTP-Normal_Call_two_parties.pcap",
    "SIP_CALL_RTP_G711",
    "SIP_DTMF2.cap",
    "rtp-protocol.pcap",
    "sip-rtp-g711.pcap",
    "40msalaw.pcap",
    "g711a.pcap",
    "one.pcap",
    "A_party_g711a.pcap",
    "speech_8k_ulaw.pcap",
    "ulaw-2013785496.pcap",
    "generated/sipp-loopback-pcma-call.pcapng",
    "FAX-Call-t38-CA-TDM-SIP-FB-1.pcap",
    "sip_ipv4_tcp.pcap",
    "b2bua-asterisk.pcapng",
    "crash-27382.pcap",
    "aaa.pcap",
    "codec-negotiation.pcap",
    "register-invite-reinvite-bye.pcap",
    "Asterisk_ZFONE_XLITE.pcap",
]
_CLEAR_ONLY = {"Asterisk_ZFONE_XLITE.pcap": 160}


@dataclass
class Reference:
    """What the direction must decode to: values where ``known``, and the counts."""

    expected: np.ndarray
    known: np.ndarray
    lost: int = 0
    duplicates: int = 0
    concealed: int = 0
    noise: list[tuple[int, int, int]] = field(default_factory=list)  # start, end, level


def _signed(value: int, bits: int) -> int:
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


def _unique_in_sequence_order(rows: list[RtpRow]) -> tuple[list[tuple[int, RtpRow]], int]:
    """One SSRC's packets without repeats, by unwrapped sequence number; and the repeats."""
    unique: dict[int, RtpRow] = {}
    ext = rows[0].seq
    previous = rows[0].seq
    for row in rows:
        ext += _signed(row.seq - previous, 16)
        previous = row.seq
        unique.setdefault(ext, row)
    return sorted(unique.items(), key=lambda item: item[0]), len(rows) - len(unique)


def reference_layout(rows: list[RtpRow]) -> Reference:
    """Lay the direction's G.711 SSRCs end to end, each packet at its RTP timestamp.

    Gaps after a sequence gap are concealment and gaps after a CN packet comfort noise: their
    samples are not compared. Every other gap, and every telephone event, is silence.
    """
    placed: list[tuple[int, np.ndarray]] = []  # decoded packets in sequence order
    unknown: list[tuple[int, int]] = []
    ref = Reference(np.zeros(0, np.int32), np.zeros(0, bool))
    end = 0
    for ssrc in dict.fromkeys(r.ssrc for r in rows if r.pt in _G711):
        ordered, repeats = _unique_in_sequence_order([r for r in rows if r.ssrc == ssrc])
        ref.duplicates += repeats
        base_pos, base_ts = end, ordered[0][1].ts
        previous_seq = ordered[0][0]
        loss_pending = False
        noise_level = None
        for ext, row in ordered:
            loss_pending |= ext - previous_seq > 1
            ref.lost += max(0, ext - previous_seq - 1)
            previous_seq = ext
            if not (row.pt in _G711 or row.event or row.pt == _CN):
                continue  # nothing to place: the loss before it counts for the next packet
            pos = base_pos + _signed(row.ts - base_ts, 32)
            if row.pt in _G711 and pos < end - _OVERLAP_SAMPLES:
                base_pos, base_ts, pos = end, row.ts, end  # the sender reset its timestamps
            if pos > end:
                if loss_pending:
                    unknown.append((end, pos))
                    ref.concealed += pos - end
                elif noise_level is not None:
                    unknown.append((end, pos))
                    ref.noise.append((end, pos, noise_level))
                end = pos
            loss_pending = False
            if row.pt in _G711:
                noise_level = None
                pcm = np.frombuffer(_G711[row.pt](row.payload, 2), np.int16)
                placed.append((pos, pcm))
                end = max(end, pos + len(pcm))
            elif row.event:
                noise_level = None
                end = max(end, pos + int.from_bytes(row.payload[2:4], "big"))
            else:
                noise_level = row.payload[0] if row.payload else 127
    ref.expected = np.zeros(end, np.int32)
    written = np.zeros(end, bool)
    for pos, pcm in placed:
        span = slice(pos, pos + len(pcm))
        free = ~written[span]  # where packets overlap, the earlier one stays
        ref.expected[span][free] = pcm[free]
        written[span] = True
    ref.known = np.ones(end, bool)
    for start, stop in unknown:
        ref.known[start:stop] = False
    ref.known |= written
    return ref


def _codecs(capture: TsharkRtp) -> dict[int, Codec]:
    codecs = {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000), _CN: Codec("CN", 8000)}
    for row in capture.rows:
        if row.event:
            codecs[row.pt] = Codec("TELEPHONE-EVENT", 8000)
    return codecs


def _address(raw: bytes) -> str:
    return str(ipaddress.ip_address(raw))


def decode_directions(
    path: Path, codecs: dict[int, Codec], allowed: set[tuple[Direction, int, int]]
) -> dict[Direction, tuple[MediaStream, np.ndarray, int]]:
    """Run the packets of each direction through the packet layer and a MediaStream."""
    streams: dict[Direction, MediaStream] = {}
    outputs: dict[Direction, list[np.ndarray]] = defaultdict(list)
    fed: dict[Direction, int] = defaultdict(int)
    directions = {key[0] for key in allowed}
    for key in directions:
        streams[key] = MediaStream(
            codecs, trim_seconds=0.0, jitter_depth=8, max_gap_seconds=_MAX_GAP_SECONDS
        )
    decoder = PacketDecoder()
    with CaptureReader(path) as reader:
        for frame in reader:
            for datagram in decoder.decode(frame):
                key = (
                    _address(datagram.src),
                    datagram.sport,
                    _address(datagram.dst),
                    datagram.dport,
                )
                stream = streams.get(key)
                if stream is None or is_rtcp(datagram.payload):
                    continue
                try:
                    packet = parse_rtp(datagram.payload)
                except RtpError:
                    continue
                if (key, packet.ssrc, packet.sequence) in allowed:
                    fed[key] += 1
                    outputs[key] += stream.push(packet)
    result = {}
    for key, stream in streams.items():
        chunks = outputs[key] + stream.flush()
        result[key] = (
            stream,
            np.concatenate(chunks) if chunks else np.zeros(0, np.int16),
            fed[key],
        )
    return result


@pytest.mark.parametrize("name", CAPTURES)
def test_g711_streams_match_the_independent_decoding(
    pcaps_dir: Path, tshark: str, name: str
) -> None:
    path = pcaps_dir / name
    capture = tshark_capture(tshark, path)
    rows = [
        r for r in capture.rows if name not in _CLEAR_ONLY or len(r.payload) == _CLEAR_ONLY[name]
    ]
    audio = {(r.direction, r.ssrc) for r in rows if r.pt in _G711}
    assert audio, f"tshark found no G.711 in {name}"
    by_direction: dict[Direction, list[RtpRow]] = defaultdict(list)
    for row in rows:
        if (row.direction, row.ssrc) in audio or row.event:
            by_direction[row.direction].append(row)
    by_direction = {d: r for d, r in by_direction.items() if any(x.pt in _G711 for x in r)}
    allowed = {(r.direction, r.ssrc, r.seq) for d in by_direction.values() for r in d}
    decoded = decode_directions(path, _codecs(capture), allowed)
    assert decoded.keys() == by_direction.keys()
    for direction, direction_rows in by_direction.items():
        stream, out, fed = decoded[direction]
        assert fed == len(direction_rows), "the packet layer must deliver what tshark sees"
        ref = reference_layout(direction_rows)
        where = f"{name}, direction {sorted(by_direction).index(direction)}"
        assert len(out) == len(ref.expected), where
        differ = np.flatnonzero((out != ref.expected) & ref.known)
        assert differ.size == 0, f"{where}: {differ.size} samples differ, first at {differ[0]}"
        stats = stream.stats
        assert (stats.lost, stats.duplicates) == (ref.lost, ref.duplicates), where
        assert stats.concealed_samples == ref.concealed, where
        assert stats.trimmed_samples == 0 and stream.undecodable is None
        events = {(r.ssrc, r.ts) for r in direction_rows if r.event}
        assert stats.telephone_events == len(events), where
        for start, stop, level in ref.noise:
            if stop - start >= 800:
                rms = float(np.sqrt(np.mean(out[start:stop].astype(float) ** 2)))
                expected_rms = 32767 * 10 ** (-level / 20)
                assert abs(20 * np.log10(rms / expected_rms)) < 1.5, where
        if name not in _CLEAR_ONLY:  # tshark's own loss count, where it saw every packet
            ssrcs = {ssrc for d, ssrc in audio if d == direction}
            tshark_lost = sum(capture.streams[(direction, ssrc)].lost for ssrc in ssrcs)
            assert tshark_lost == ref.lost - ref.duplicates, where
        if ref.lost == 0 and not ref.noise:
            assert ref.known.all()  # the whole output was compared
