"""SIP over TCP: the shared TCP captures against tshark, and crafted segment sequences."""

from __future__ import annotations

import random
import re
from collections import Counter
from pathlib import Path

import pytest

from gateway.capture.datagram import TCP, UDP
from gateway.capture.packets import PacketDecoder
from gateway.capture.tcpsip import TCP_FIN, TCP_RST, TCP_SYN, TcpSipReassembler, looks_like_sip
from tests.capture.packet_helpers import frames_of
from tests.capture.tshark_reference import tshark_view

CLIENT = bytes([198, 51, 100, 1])
SERVER = bytes([198, 51, 100, 2])
_CSEQ = re.compile(rb"\r\n(?:CSeq|cseq|CSEQ)[ \t]*:[ \t]*([^\r\n]*)")
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)", re.I)


def decode_file(path: Path) -> tuple[list, Counter]:
    decoder = PacketDecoder()
    out = [dg for frame in frames_of(path) for dg in decoder.decode(frame)]
    decoder.flush()
    return out, decoder.counters


def cseq(message: bytes) -> str:
    match = _CSEQ.search(message)
    assert match, message[:200]
    return match.group(1).decode().strip()


def normalise(value: str) -> str:
    return " ".join(value.split())


@pytest.fixture(scope="module")
def real_messages(pcaps_dir) -> list[bytes]:
    """Real SIP messages (several with SDP bodies), taken from a UDP capture."""
    datagrams, _ = decode_file(pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap")
    messages = [dg.payload for dg in datagrams if looks_like_sip(dg.payload)]
    assert len(messages) > 20
    assert any(int(_LENGTH.search(m).group(1)) > 0 for m in messages)
    return messages


@pytest.mark.parametrize(
    "name",
    [
        "sip_ipv4_tcp.pcap",
        "sip_ipv4_tcp_fragmented.pcap",
        "sip_ipv4_tcp_retrans.pcap",
        "ipip.pcap",
        "sip_tcp_websocket.pcap",
    ],
)
def test_sip_messages_over_tcp_match_tshark(pcaps_dir, tshark, name):
    path = pcaps_dir / name
    datagrams, counters = decode_file(path)
    ours = [normalise(cseq(dg.payload)) for dg in datagrams if dg.proto == TCP]
    theirs = [
        normalise(value)
        for frame in tshark_view(tshark, path)
        if frame.tcp and not frame.websocket and not frame.icmp
        for value in frame.cseqs
    ]
    assert ours == theirs
    for dg in datagrams:
        if dg.proto == TCP:
            head, _, body = dg.payload.partition(b"\r\n\r\n")
            match = _LENGTH.search(head)
            assert len(body) == (int(match.group(1)) if match else 0)
    assert "tcp.incomplete" not in counters
    if name == "sip_ipv4_tcp_fragmented.pcap":
        assert len(ours) > 400  # SIP on port 6060, messages split across segments
    if name == "sip_ipv4_tcp_retrans.pcap":
        assert counters["tcp.retransmission"] >= 1
    if name == "sip_tcp_websocket.pcap":
        assert ours == [] and counters["tcp.not_sip"] >= 1


def feed(
    reassembler: TcpSipReassembler,
    segments: list[tuple[int, bytes]],
    *,
    flags: int = 0,
    ts: float = 100.0,
    key: tuple[bytes, int, bytes, int] = (CLIENT, 40000, SERVER, 5060),
) -> list[bytes]:
    out = []
    for seq, data in segments:
        for dg in reassembler.segment(ts, *key, seq % (1 << 32), flags, data):
            assert (dg.src, dg.sport, dg.dst, dg.dport, dg.proto) == (*key, TCP)
            out.append(dg.payload)
    return out


def split(stream: bytes, isn: int, sizes: list[int], first: int = 0) -> list[tuple[int, bytes]]:
    """Segments of ``stream`` with the given sizes, in turn, after a first one of ``first``.

    A stream is only picked up at a segment that holds a whole SIP start line (real stacks
    send each message in one write), so tests of tiny segments pass a large first one.
    """
    segments, pos, i = [], 0, 0
    if first:
        segments.append((isn, stream[:first]))
        pos = first
    while pos < len(stream):
        size = sizes[i % len(sizes)]
        segments.append((isn + pos, stream[pos : pos + size]))
        pos += size
        i += 1
    return segments


def test_one_message_per_segment(real_messages):
    r = TcpSipReassembler(Counter())
    segments = split(b"".join(real_messages), 1000, [len(m) for m in real_messages])
    assert feed(r, segments) == real_messages
    assert r.counters["tcp.sip_messages"] == len(real_messages)


@pytest.mark.parametrize("size", [1, 7, 100, 1460, 5000])
def test_messages_split_and_joined_at_any_boundary(real_messages, size):
    r = TcpSipReassembler(Counter())
    stream = b"".join(real_messages)
    assert feed(r, split(stream, 77, [size], first=200)) == real_messages


def test_keepalives_between_messages_are_skipped(real_messages):
    r = TcpSipReassembler(Counter())
    stream = b"\r\n\r\n".join(real_messages[:5]) + b"\r\n"
    assert feed(r, split(stream, 5, [300])) == real_messages[:5]
    assert "tcp.incomplete" not in r.counters


def test_out_of_order_segments_are_reordered(real_messages):
    r = TcpSipReassembler(Counter())
    stream = b"".join(real_messages[:6])
    segments = split(stream, 9, [200])
    rng = random.Random(4)
    for start in range(1, len(segments), 5):  # shuffle within windows of five segments
        window = segments[start : start + 5]
        rng.shuffle(window)
        segments[start : start + 5] = window
    assert feed(r, segments) == real_messages[:6]
    assert r.counters["tcp.out_of_order"] > 0


def test_retransmissions_and_overlaps_are_dropped(real_messages):
    r = TcpSipReassembler(Counter())
    stream = b"".join(real_messages[:6])
    segments = []
    rng = random.Random(7)
    pos = 0
    while pos < len(stream):
        size = rng.randint(50, 400)
        back = rng.randint(0, min(pos, 120))  # resend some bytes already sent
        segments.append((1 + pos - back, stream[pos - back : pos + size]))
        if rng.random() < 0.3:
            segments.append(segments[-1])  # an exact retransmission
        pos += size
    assert feed(r, segments) == real_messages[:6]
    assert r.counters["tcp.retransmission"] > 0
    assert r.counters["tcp.overlap"] > 0


def test_sequence_numbers_wrap_around(real_messages):
    r = TcpSipReassembler(Counter())
    stream = b"".join(real_messages[:4])
    segments = split(stream, (1 << 32) - 700, [300])
    assert feed(r, segments) == real_messages[:4]


def test_syn_then_data(real_messages):
    r = TcpSipReassembler(Counter())
    assert feed(r, [(5000, b"")], flags=TCP_SYN) == []
    assert feed(r, split(real_messages[0], 5001, [500])) == [real_messages[0]]


def test_lost_segment_loses_only_the_message_it_was_in(real_messages):
    messages = real_messages[:8]
    segments = [(1 + sum(len(m) for m in messages[:i]), m) for i, m in enumerate(messages)]
    # Split message 2 in two and lose its second half: the mirror port dropped it.
    seq2, msg2 = segments[2]
    segments[2] = (seq2, msg2[: len(msg2) // 2])
    r = TcpSipReassembler(Counter(), gap_timeout=1.0)
    out = []
    for i, (seq, data) in enumerate(segments):
        out += [
            dg.payload for dg in r.segment(100.0 + i, CLIENT, 40000, SERVER, 5060, seq, 0, data)
        ]
    assert out == messages[:2] + messages[3:]
    assert r.counters["tcp.gap"] == 1


def test_gap_outgrowing_the_bounds_is_skipped(real_messages):
    messages = real_messages[:10]
    segments = [(1 + sum(len(m) for m in messages[:i]), m) for i, m in enumerate(messages)]
    del segments[1]  # lost for good
    r = TcpSipReassembler(Counter(), max_early_segments=3)
    out = feed(r, segments)  # all at one capture time: only the bounds can end the wait
    assert out == [messages[0], *messages[2:]]
    assert r.counters["tcp.gap"] == 1


def test_compact_and_lowercase_content_length(real_messages):
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
    first = (
        b"MESSAGE sip:user@example.com SIP/2.0\r\nCSeq: 1 MESSAGE\r\nl: %d\r\n\r\n" % len(body)
        + body
    )
    second = b"SIP/2.0 200 OK\r\ncseq: 1 MESSAGE\r\ncontent-length:   %d\r\n\r\n" % len(body) + body
    r = TcpSipReassembler(Counter())
    assert feed(r, split(first + second, 1, [10], first=60)) == [first, second]


def test_message_without_content_length_ends_at_the_blank_line():
    message = b"OPTIONS sip:example.com SIP/2.0\r\nCSeq: 2 OPTIONS\r\n\r\n"
    r = TcpSipReassembler(Counter())
    assert feed(r, [(1, message + message)]) == [message, message]
    assert r.counters["tcp.no_content_length"] == 2


def test_wrong_content_length_desynchronises_then_recovers(real_messages):
    length = int(_LENGTH.search(real_messages[0]).group(1))
    broken = _LENGTH.sub(b"\r\nContent-Length: %d" % (length + 50), real_messages[0], count=1)
    assert broken != real_messages[0]
    r = TcpSipReassembler(Counter())
    stream = [broken, real_messages[1], real_messages[2]]
    segments = [(1 + sum(len(m) for m in stream[:i]), m) for i, m in enumerate(stream)]
    # The first message swallows the start of the second; the third is found again.
    assert feed(r, segments) == [broken + real_messages[1][:50], real_messages[2]]
    assert r.counters["tcp.desync"] == 1


def test_oversized_message_is_dropped_and_the_stream_recovers(real_messages):
    huge = b"INVITE sip:a@example.com SIP/2.0\r\nContent-Length: 999999\r\n\r\n"
    r = TcpSipReassembler(Counter(), max_message=4096)
    out = feed(r, [(1, huge + b"x" * 1000), (1 + len(huge) + 1000, real_messages[0])])
    assert out == [real_messages[0]]
    assert r.counters["tcp.oversized"] == 1
    endless = b"INVITE sip:a@example.com SIP/2.0\r\n" + b"X-Filler: yyyyyyyy\r\n" * 300
    r = TcpSipReassembler(Counter(), max_message=4096)
    assert feed(r, split(endless, 1, [1000])) == []
    assert r.counters["tcp.oversized"] == 1
    assert r.bytes_held < 4096


def test_non_sip_stream_is_counted_once_and_not_kept():
    r = TcpSipReassembler(Counter())
    tls = bytes.fromhex("160301020001") + bytes(500)
    for i in range(10):
        feed(r, [(1 + i * len(tls), tls)], key=(CLIENT, 40001, SERVER, 5061))
    assert r.counters["tcp.not_sip"] == 1
    assert len(r) == 0


def test_fin_and_rst_end_the_stream(real_messages):
    r = TcpSipReassembler(Counter())
    half = len(real_messages[0]) // 2
    feed(r, [(1, real_messages[0][:half])])
    assert len(r) == 1
    feed(r, [(1 + half, b"")], flags=TCP_RST)
    assert len(r) == 0
    assert r.counters["tcp.incomplete"] == 1
    assert feed(r, [(1, real_messages[0])], flags=TCP_FIN) == [real_messages[0]]
    assert len(r) == 0


def test_streams_are_bounded_and_expire(real_messages):
    r = TcpSipReassembler(Counter(), max_streams=50, idle_timeout=60.0)
    half = real_messages[0][: len(real_messages[0]) // 2]
    for port in range(1000, 1200):
        feed(r, [(1, half)], key=(CLIENT, port, SERVER, 5060), ts=float(port))
    assert len(r) == 50
    assert r.counters["tcp.evicted"] == 150
    r.expire(1199.0 + 30.0)
    assert len(r) == 31  # streams last active at 1169..1199 are no more than a minute idle
    r.expire(1199.0 + 61.0)
    assert len(r) == 0
    assert r.counters["tcp.idle_expired"] == 50


def test_decoder_output_for_udp_sip_is_untouched(pcaps_dir):
    datagrams, _ = decode_file(pcaps_dir / "sip_ipv4_tcp_retrans.pcap")
    assert {dg.proto for dg in datagrams} == {TCP, UDP}
