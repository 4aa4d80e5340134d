"""Property tests: random and mutated input never breaks the readers or the decoder.

Each parser may refuse input only in its documented way (``CaptureFileError`` when a file is
not a capture at all); anything else is counted and skipped, and every buffer stays bounded.
"""

from __future__ import annotations

import functools
import math
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.capture.datagram import TCP, UDP, Datagram
from gateway.capture.ipfragments import MAX_FRAGMENTS_PER_DATAGRAM, FragmentReassembler
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import MAX_RECORD, CaptureFileError, CaptureReader, Frame
from gateway.capture.tcpsip import TcpSipReassembler, looks_like_sip
from tests.capture.packet_helpers import frames_of

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
MAGICS = [
    b"",
    b"\xd4\xc3\xb2\xa1",
    b"\xa1\xb2\xc3\xd4",
    b"\x4d\x3c\xb2\xa1",
    b"\x0a\x0d\x0d\x0a",
]
LINKTYPES = [1, 12, 14, 101, 113, 228, 229, 276, 0, 147]
mutations = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=24)


def read_all(path: Path) -> CaptureReader | None:
    """Read a file to its end; None when it is refused as not a capture."""
    try:
        reader = CaptureReader(path)
    except CaptureFileError:
        return None
    with reader:
        for frame in reader:
            assert isinstance(frame.data, bytes) and len(frame.data) <= MAX_RECORD
            assert isinstance(frame.ts, float)
            assert 0 <= reader.position <= reader.size
    return reader


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in changes:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


# Real data is loaded through these caches rather than passed as test arguments, so that a
# failing example reports its seed and mutations, not kilobytes of captured traffic.


@functools.cache
def head_of(path: Path) -> bytes:
    return path.read_bytes()[:6000]


@FUZZ
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=2000))
def test_reader_on_random_bytes(scratch, magic, body):
    path = scratch / "random.bin"
    path.write_bytes(magic + body)
    read_all(path)


@FUZZ
@given(
    name=st.sampled_from(
        ["sip_ipv4_tcp.pcap", "erspan_sip_ipv4_udp.pcapng", "sipp-branch-scenario.pcapng"]
    ),
    changes=mutations,
    cut=st.none() | st.integers(0, 6000),
)
def test_reader_on_mutated_captures(scratch, pcaps_dir, name, changes, cut):
    path = scratch / "mutated.bin"
    path.write_bytes(mutate(head_of(pcaps_dir / name), changes, cut))
    read_all(path)


@functools.cache
def real_frames(pcaps_dir: Path) -> list[Frame]:
    """Frames of every layer kind the decoder handles, from the shared captures."""
    frames: list[Frame] = []
    for name, count in [
        ("erspan_sip_ipv4_udp.pcapng", 20),
        ("ipip.pcap", 4),
        ("ipv6frag.pcap", 10),
        ("SIP-SRTP-Normal_Call_two_parties.pcap", 4753),
        ("sip_ipv4_tcp_fragmented.pcap", 30),
        ("DTMFsipinfo.pcap", 5),
        ("rtp.pcapng", 112),
        ("sip_ipv6_udp.pcap", 6),
    ]:
        frames += frames_of(pcaps_dir / name)[:count]
    # Keep the interesting ones from the long file: its fragments, TCP, and a few RTP/SIP.
    return [
        f
        for i, f in enumerate(frames)
        if len(f.data) > 600 or i % 97 == 0 or f.data[23:24] == b"\x06"
    ]


def check_outputs(out: list[Datagram]) -> None:
    for dg in out:
        assert dg.proto in (UDP, TCP)
        assert len(dg.src) in (4, 16) and len(dg.dst) == len(dg.src)
        assert 0 <= dg.sport <= 0xFFFF and 0 <= dg.dport <= 0xFFFF
        assert isinstance(dg.payload, bytes)


@FUZZ
@given(linktype=st.sampled_from(LINKTYPES), data=st.binary(max_size=300), ts=st.floats(0, 2e9))
def test_decoder_on_random_frames(linktype, data, ts):
    decoder = PacketDecoder()
    check_outputs(decoder.decode(Frame(ts, linktype, data)))
    decoder.flush()


@FUZZ
@given(data=st.data())
def test_decoder_on_mutated_real_frames(pcaps_dir, data):
    decoder = PacketDecoder()
    frames = real_frames(pcaps_dir)
    picks = data.draw(st.lists(st.integers(0, len(frames) - 1), min_size=1, max_size=30))
    for frame in map(frames.__getitem__, picks):
        raw = mutate(frame.data, data.draw(mutations), data.draw(st.none() | st.integers(0, 2000)))
        if not raw:
            continue
        check_outputs(decoder.decode(Frame(frame.ts, frame.linktype, raw)))
    assert decoder.fragments.bytes_held <= decoder.fragments.max_bytes
    assert len(decoder.fragments) <= decoder.fragments.max_datagrams
    assert len(decoder.tcp) <= decoder.tcp.max_streams
    decoder.flush()
    assert len(decoder.fragments) == 0 and len(decoder.tcp) == 0


fragment_ops = st.lists(
    st.tuples(
        st.integers(0, 5),  # datagram id
        st.integers(0, 200).map(lambda n: n * 8),  # offset
        st.booleans(),  # more fragments
        st.integers(0, 600),  # length
        st.floats(0, 100),  # time
    ),
    max_size=80,
)


@FUZZ
@given(ops=fragment_ops)
def test_fragment_reassembler_stays_bounded(ops):
    reassembler = FragmentReassembler(Counter(), max_datagrams=4, max_bytes=3000, timeout=10.0)
    for ident, offset, more, length, ts in ops:
        result = reassembler.add(ts, ident, 17, offset, more, bytes(length))
        if result is not None:
            assert result[0] == 17 and len(result[1]) <= 65535
        reassembler.expire(ts)
        assert len(reassembler) <= 4
        assert 0 <= reassembler.bytes_held <= 3000


@FUZZ
@given(seed=st.integers(0, 2**32), piece=st.integers(1, 40), duplicates=st.integers(0, 5))
def test_fragments_of_a_real_payload_reassemble_in_any_order(pcaps_dir, seed, piece, duplicates):
    payload = max(real_frames(pcaps_dir), key=lambda f: len(f.data)).data
    rng = random.Random(seed)
    # Within the cap on fragments per datagram (smaller pieces are refused as an attack).
    size = max(piece * 8, 8 * math.ceil(len(payload) / (8 * MAX_FRAGMENTS_PER_DATAGRAM)))
    pieces = [(off, payload[off : off + size]) for off in range(0, len(payload), size)]
    order = pieces + [rng.choice(pieces) for _ in range(duplicates)]
    rng.shuffle(order)
    reassembler = FragmentReassembler(Counter())
    results = [
        r
        for off, data in order
        if (r := reassembler.add(1.0, "k", 17, off, off + len(data) < len(payload), data))
    ]
    assert results[:1] == [(17, payload)]


@functools.cache
def sip_messages(pcaps_dir: Path) -> list[bytes]:
    decoder = PacketDecoder()
    out = []
    for frame in frames_of(pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"):
        out += [dg.payload for dg in decoder.decode(frame) if looks_like_sip(dg.payload)]
    return out[:12]


@FUZZ
@given(seed=st.integers(0, 2**32), isn=st.integers(0, 2**32 - 1))
def test_tcp_reassembly_of_real_messages_under_reordering(pcaps_dir, seed, isn):
    """Any segmentation, reordering within a window, and retransmission gives the messages."""
    messages = sip_messages(pcaps_dir)
    rng = random.Random(seed)
    stream = b"".join(messages)
    first = len(messages[0])  # streams are picked up at a segment with a whole start line
    segments = [(0, stream[:first])]
    pos = first
    while pos < len(stream):
        size = rng.randint(1, 1500)
        back = rng.randint(0, min(pos, 100)) if rng.random() < 0.2 else 0
        segments.append((pos - back, stream[pos - back : pos + size]))
        pos += size
    for i in range(1, len(segments) - 1):
        if rng.random() < 0.3:
            j = min(len(segments) - 1, i + rng.randint(1, 4))
            segments[i], segments[j] = segments[j], segments[i]
    segments += [rng.choice(segments[1:] or segments) for _ in range(3)]  # late duplicates
    r = TcpSipReassembler(Counter())
    out = []
    for offset, data in segments:
        seq = (isn + offset) % (1 << 32)
        out += [dg.payload for dg in r.segment(1.0, b"\x01" * 4, 1, b"\x02" * 4, 2, seq, 0, data)]
    assert out == messages


@FUZZ
@given(
    segments=st.lists(
        st.tuples(
            st.integers(0, 3),  # connection
            st.integers(0, 2**32 - 1),  # sequence number
            st.sampled_from([0, 0, 0, 1, 2, 4]),  # flags
            st.sampled_from([b"", b"INVITE sip:a@b SIP/2.0\r\n", b"SIP/2.0 200 OK\r\n"]).flatmap(
                lambda start: st.binary(max_size=400).map(lambda rest: start + rest)
            ),
            st.floats(0, 1000),
        ),
        max_size=60,
    )
)
def test_tcp_reassembler_on_random_segments(segments):
    r = TcpSipReassembler(Counter(), max_streams=3, max_message=2000, max_early_segments=4)
    for conn, seq, flags, data, ts in segments:
        for dg in r.segment(ts, b"\x01" * 4, conn, b"\x02" * 4, 5060, seq, flags, data):
            assert dg.proto == TCP and len(dg.payload) <= 2000
            assert looks_like_sip(dg.payload)
        r.expire(ts)
        assert len(r) <= 3
        # Per stream: under one message in progress, and held segments up to the bound
        # plus the segment that overflowed it.
        assert r.bytes_held <= len(r) * (2000 + 2 * 2000 + 400)
