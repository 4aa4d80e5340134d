"""Write classic pcap files of Ethernet frames, and build UDP frames to put in them.

Used to make the demo capture and the benchmark mirrors: what it writes must read back in
tshark, with valid IP and UDP checksums, exactly as a capture taken at a mirror port would.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import BinaryIO

from gateway.capture.pcapfile import LINKTYPE_ETHERNET, MAX_RECORD
from gateway.closing import Closing

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")
_PCAP_MAGIC_MICRO = 0xA1B2C3D4
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_UDP = 17
_TTL = 64
_IPV4_DONT_FRAGMENT = 0x4000
_MAX_UDP_PAYLOAD = 0xFFFF - 8  # the UDP length field covers the 8-byte header too
_MAX_IPV4_UDP_PAYLOAD = 0xFFFF - 20 - 8


class PcapWriter(Closing):
    """A classic little-endian pcap with microsecond timestamps and Ethernet frames.

    ``target`` is a path (created or truncated, closed by ``close``) or a binary file opened
    for writing (left open: the caller owns it). Frames are written in the order given.
    """

    def __init__(self, target: str | Path | BinaryIO) -> None:
        if isinstance(target, str | Path):
            self._file: BinaryIO = Path(target).open("wb")  # noqa: SIM115 (closed by close)
            self._owned = True
        else:
            self._file = target
            self._owned = False
        self.frames = 0
        self._file.write(
            _FILE_HEADER.pack(_PCAP_MAGIC_MICRO, 2, 4, 0, 0, MAX_RECORD, LINKTYPE_ETHERNET)
        )

    def write(self, ts: float, frame: bytes) -> None:
        """Append ``frame`` captured at ``ts`` seconds since the Unix epoch."""
        if ts < 0:
            raise ValueError(f"timestamp {ts} is before 1970; pcap stores unsigned seconds")
        if len(frame) > MAX_RECORD:
            raise ValueError(
                f"frame of {len(frame)} bytes exceeds the snapshot length {MAX_RECORD}; "
                "split the payload across several frames"
            )
        micros = round(ts * 1_000_000)
        self._file.write(
            _RECORD_HEADER.pack(micros // 1_000_000, micros % 1_000_000, len(frame), len(frame))
        )
        self._file.write(frame)
        self.frames += 1

    def close(self) -> None:
        if self._owned:
            self._file.close()
        else:
            self._file.flush()


def udp_frame(src_ip: str, sport: int, dst_ip: str, dport: int, payload: bytes) -> bytes:
    """Ethernet + IPv4 (or IPv6, by the addresses' family) + UDP around ``payload``.

    Checksums are computed; MAC addresses are locally administered ones derived from the IP
    addresses, so each host keeps one MAC across the capture.
    """
    src, dst = _packed(src_ip), _packed(dst_ip)
    if len(src) != len(dst):
        raise ValueError(f"{src_ip} and {dst_ip} are of different IP versions; use one family")
    for port in (sport, dport):
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"UDP port {port} is out of range 0-65535")
    v4 = len(src) == 4
    limit = _MAX_IPV4_UDP_PAYLOAD if v4 else _MAX_UDP_PAYLOAD
    if len(payload) > limit:
        raise ValueError(f"UDP payload of {len(payload)} bytes exceeds the {limit}-byte limit")
    udp_len = 8 + len(payload)
    if v4:
        pseudo = src + dst + struct.pack("!BBH", 0, _UDP, udp_len)
    else:
        pseudo = src + dst + struct.pack("!IxxxB", udp_len, _UDP)
    header = struct.pack("!HHHH", sport, dport, udp_len, 0)
    # a computed zero is sent as all ones: zero means "no checksum" (RFC 768, RFC 8200)
    udp_sum = _checksum(pseudo + header + payload) or 0xFFFF
    udp = struct.pack("!HHHH", sport, dport, udp_len, udp_sum) + payload
    if v4:
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, 0, _IPV4_DONT_FRAGMENT, _TTL, _UDP, 0, src, dst
        )
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        ethertype = _ETHERTYPE_IPV4
    else:
        ip = struct.pack("!IHBB16s16s", 6 << 28, udp_len, _UDP, _TTL, src, dst)
        ethertype = _ETHERTYPE_IPV6
    return _mac(dst) + _mac(src) + struct.pack("!H", ethertype) + ip + udp


def _packed(text: str) -> bytes:
    # inet_pton rather than ipaddress: benchmark mirrors build millions of frames
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        return socket.inet_pton(family, text)
    except OSError:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from None


def _checksum(data: bytes) -> int:
    """The 16-bit ones' complement checksum of RFC 1071."""
    if len(data) % 2:
        data += b"\x00"
    # 2**16 is 1 modulo 2**16 - 1, so the data read as one big number is congruent to the sum
    # of its 16-bit words: one C-speed modulo instead of a loop. Ones' complement arithmetic
    # writes a non-zero multiple of 0xFFFF as 0xFFFF ("negative zero"), not as 0.
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF or (0xFFFF if value else 0)
    return ~total & 0xFFFF


def _mac(ip_raw: bytes) -> bytes:
    # 0x02: locally administered, unicast: never a real vendor's address
    return b"\x02" + ip_raw[-5:].rjust(5, b"\x00")
