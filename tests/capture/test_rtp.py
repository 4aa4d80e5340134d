"""RTP parsing and RTCP checks, against tshark's dissection of the shared captures."""

from __future__ import annotations

import struct
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.rtp import RtpError, RtpPacket, is_rtcp, parse_rtp, rtcp_error
from tests.capture.tshark_reference import tshark_rtcp, tshark_rtp


def build_rtp(
    payload: bytes,
    *,
    sequence: int = 1,
    timestamp: int = 160,
    ssrc: int = 0x1234,
    payload_type: int = 8,
    marker: bool = False,
    csrcs: int = 0,
    extension: bytes | None = None,
    padding: int = 0,
) -> bytes:
    first = 0x80 | csrcs | (0x10 if extension is not None else 0) | (0x20 if padding else 0)
    header = struct.pack(
        "!BBHII", first, payload_type | (0x80 if marker else 0), sequence, timestamp, ssrc
    )
    header += bytes(4 * csrcs)
    if extension is not None:
        header += struct.pack("!HH", 0xBEDE, len(extension) // 4) + extension
    tail = bytes(padding - 1) + bytes([padding]) if padding else b""
    return header + payload + tail


_RTP_CAPTURES = [
    "SIP-RTP-Normal_Call_two_parties.pcap",
    "SIP_CALL_RTP_G711",
    "SIP_DTMF2.cap",
    "rtp-protocol.pcap",
    "sip-rtp-g711.pcap",
    "sip-rtp-g722.pcap",
    "sip-rtp-l16.pcap",
    "ulaw-2013785496.pcap",
    "rtp.pcapng",
    "crash-27382.pcap",
]


@pytest.mark.parametrize("name", _RTP_CAPTURES)
def test_parse_agrees_with_tshark(pcaps_dir: Path, tshark: str, name: str) -> None:
    rows = tshark_rtp(tshark, pcaps_dir / name)
    assert rows, f"tshark found no RTP in {name}"
    for row in rows:
        packet = parse_rtp(row.datagram)
        assert (packet.ssrc, packet.sequence, packet.timestamp) == (row.ssrc, row.seq, row.ts)
        assert (packet.payload_type, packet.marker) == (row.pt, row.marker)
        assert packet.payload == row.payload
        assert not is_rtcp(row.datagram)


def test_keepalive_datagram_that_tshark_calls_rtp_is_rejected(pcaps_dir: Path, tshark: str) -> None:
    # sip-rtp-g711.pcap has a 4-byte 0xffffffff keep-alive on an RTP port
    command = [tshark, "-n", "-r", str(pcaps_dir / "sip-rtp-g711.pcap"), "-Y", "udp.length < 20"]
    command += ["-T", "fields", "-e", "udp.payload"]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    assert out
    for hex_payload in out:
        with pytest.raises(RtpError) as err:
            parse_rtp(bytes.fromhex(hex_payload))
        assert err.value.reason == "rtp.short"


def test_csrc_extension_padding_are_stripped() -> None:
    payload = bytes(range(40))
    data = build_rtp(payload, csrcs=3, extension=bytes(8), padding=5, marker=True, sequence=65535)
    packet = parse_rtp(data)
    assert packet == RtpPacket(True, 8, 65535, 160, 0x1234, payload)
    assert parse_rtp(memoryview(data)) == packet


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x08" + bytes(9), "rtp.short"),
        (b"\x40\x08" + bytes(10), "rtp.version"),
        (b"\x8f\x08" + bytes(10) + bytes(20), "rtp.header"),  # 15 CSRCs announced, 5 present
        (b"\x90\x08" + bytes(10), "rtp.extension"),  # extension header missing
        (b"\x90\x08" + bytes(10) + b"\xbe\xde\x00\x05", "rtp.header"),  # 20 bytes missing
        (b"\xa0\x08" + bytes(10) + b"\x01\x03", "rtp.padding"),  # pads 3 of 2 bytes
        (b"\xa0\x08" + bytes(10) + b"\x01\x00", "rtp.padding"),  # zero padding count
    ],
)
def test_malformed_headers_raise_with_reason(data: bytes, reason: str) -> None:
    with pytest.raises(RtpError) as err:
        parse_rtp(data)
    assert err.value.reason == reason
    assert "skipped" in str(err.value)


def test_padding_may_consume_the_whole_payload() -> None:
    assert parse_rtp(build_rtp(b"", padding=4)).payload == b""


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=80))
def test_random_bytes_parse_or_raise_rtp_error(data: bytes) -> None:
    try:
        packet = parse_rtp(data)
    except RtpError as err:
        assert err.reason.startswith("rtp.")
        return
    assert len(packet.payload) <= len(data) - 12
    assert 0 <= packet.payload_type < 128


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_mutated_valid_packets_parse_or_raise_rtp_error(data: st.DataObject) -> None:
    packet = bytearray(
        build_rtp(bytes(range(30)), csrcs=2, extension=bytes(4), padding=3, sequence=7)
    )
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(packet) - 1))
        packet[index] = data.draw(st.integers(0, 255))
    packet = packet[: data.draw(st.integers(0, len(packet)))]
    try:
        parsed = parse_rtp(bytes(packet))
    except RtpError:
        return
    assert len(parsed.payload) <= len(packet) - 12


def test_is_rtcp_follows_rfc5761_ranges() -> None:
    for second in range(256):
        data = bytes([0x80, second]) + bytes(10)
        assert is_rtcp(data) == (192 <= second <= 223)
    assert not is_rtcp(b"\x80\xc8\x00")  # too short to be a report
    assert not is_rtcp(b"\x40\xc8" + bytes(10))  # not version 2


@pytest.mark.parametrize(
    "name",
    [
        "SIP-RTP-Normal_Call_two_parties.pcap",
        "SIP_CALL_RTP_G711",
        "rtp-protocol.pcap",
        "sip_ipv4_tcp.pcap",
        "aaa.pcap",
        "crash-27382.pcap",
    ],
)
def test_rtcp_in_captures_is_recognised_and_well_framed(
    pcaps_dir: Path, tshark: str, name: str
) -> None:
    reports = tshark_rtcp(tshark, pcaps_dir / name)
    assert reports
    for data in reports:
        assert is_rtcp(data)
        assert rtcp_error(data) is None


def test_crash_27382_compounds_are_checked_without_crashing(pcaps_dir: Path, tshark: str) -> None:
    # AST-2017-012 is triggered by a compound holding a sender AND a receiver report. The
    # framing of both compounds in the capture is valid (tshark flags nothing, and neither
    # does the check); a receiver report announcing one block more than it carries, and
    # lengths past the datagram end, are counted instead of followed.
    reports = tshark_rtcp(tshark, pcaps_dir / "crash-27382.pcap")
    assert len(reports) == 2
    counters: Counter[str] = Counter()
    for data in reports:
        kinds = {}
        offset = 0
        while offset < len(data):
            kinds[data[offset + 1]] = offset
            offset += 4 * (struct.unpack_from("!H", data, offset + 2)[0] + 1)
        assert 200 in kinds and 201 in kinds
        announce_block = bytearray(data)
        announce_block[kinds[201]] = 0x80 | (data[kinds[201]] & 0x1F) + 1
        overlong = bytearray(data)
        overlong[3] += 100
        for candidate in (data, bytes(announce_block), bytes(overlong), data[:30]):
            reason = rtcp_error(candidate)
            if reason is not None:
                counters[reason] += 1
    assert counters == {"rtcp.report_count": 2, "rtcp.length": 4}


def test_rtcp_framing_errors_have_reasons() -> None:
    sender_report = struct.pack("!BBHI", 0x81, 200, 12, 1) + bytes(20) + bytes(24)
    receiver_report = struct.pack("!BBHI", 0x81, 201, 7, 1) + bytes(24)
    assert rtcp_error(sender_report + receiver_report) is None
    short_rr = struct.pack("!BBHI", 0x81, 201, 1, 1)  # one report block announced, none sent
    assert rtcp_error(sender_report + short_rr) == "rtcp.report_count"
    assert rtcp_error(sender_report[:-4]) == "rtcp.length"
    assert rtcp_error(sender_report + b"\x81\xc9\x00") is None  # stray tail bytes
    assert rtcp_error(b"\x41\xc9\x00\x01" + bytes(4)) == "rtcp.version"
    assert rtcp_error(b"\x80") == "rtcp.short"


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_rtcp_check_never_raises(data: bytes) -> None:
    reason = rtcp_error(data)
    assert reason is None or reason.startswith("rtcp.")
