"""RTP packets (RFC 3550) and the RTCP checks needed to tell the two apart on one port.

Parsing is one ``struct.unpack_from`` on the fixed header plus slicing: this runs for every
media packet of every analysed call. Malformed input raises :class:`RtpError`, whose
``reason`` is a short counter key for the caller's ``counters``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_HEADER_LEN = 12
_RTCP_SR = 200
_RTCP_RR = 201
_RTCP_SR_MIN_WORDS = 7  # header + sender SSRC + 20-byte sender info, in 32-bit words
_RTCP_RR_MIN_WORDS = 2  # header + sender SSRC
_REPORT_BLOCK_WORDS = 6


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet; ``reason`` is a counter key."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{detail}; the datagram is not RTP and should be counted and skipped")
        self.reason = reason


@dataclass(slots=True)
class RtpPacket:
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes  # after CSRCs and header extension, without padding


def parse_rtp(data: bytes | memoryview) -> RtpPacket:
    """Parse one RTP packet; raise :class:`RtpError` if its header does not hold together."""
    size = len(data)
    if size < _HEADER_LEN:
        raise RtpError("rtp.short", f"{size} bytes is shorter than the 12-byte RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        raise RtpError("rtp.version", f"RTP version {first >> 6} (only version 2 exists)")
    start = _HEADER_LEN + 4 * (first & 0x0F)
    if first & 0x10:
        if start + 4 > size:
            raise RtpError("rtp.extension", "the header extension starts past the packet end")
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    if start > size:
        raise RtpError("rtp.header", "CSRC list or header extension runs past the packet end")
    end = size
    if first & 0x20:
        padding = data[size - 1]
        if padding == 0 or padding > size - start:
            raise RtpError("rtp.padding", f"padding of {padding} bytes does not fit the payload")
        end -= padding
    return RtpPacket(
        bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc, bytes(data[start:end])
    )


def is_rtcp(data: bytes | memoryview) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192-223 occupy the RTP marker+PT byte."""
    return len(data) >= 8 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


def rtcp_error(data: bytes | memoryview) -> str | None:
    """Check an RTCP compound packet's framing; return a counter key, or None if it holds.

    Each packet's length field must stay inside the datagram, and sender/receiver reports
    must be long enough for their report count: the framing a receiver walks before trusting
    any field (RFC 3550 section 6.4 and appendix A.2). Fewer than four stray bytes after the
    last packet are tolerated: real endpoints send them.
    """
    size = len(data)
    if size < 4:
        return "rtcp.short"
    offset = 0
    while size - offset >= 4:
        first, packet_type, length = _RTCP_HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            return "rtcp.version"
        words = length + 1
        if offset + 4 * words > size:
            return "rtcp.length"
        count = first & 0x1F
        if packet_type == _RTCP_SR and words < _RTCP_SR_MIN_WORDS + _REPORT_BLOCK_WORDS * count:
            return "rtcp.report_count"
        if packet_type == _RTCP_RR and words < _RTCP_RR_MIN_WORDS + _REPORT_BLOCK_WORDS * count:
            return "rtcp.report_count"
        offset += 4 * words
    return None
