"""Test helpers: capture writers and packet builders.

The builders pack headers with ``struct`` so each test shows the exact bytes it feeds; tshark
(``tshark_reference``), run on the files the writers produce, is the independent check that the
bytes are what they claim to be.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from gateway.capture.linklayer import network_start
from gateway.capture.pcapfile import CaptureReader, Frame

ETH_SRC = bytes.fromhex("020000000001")
ETH_DST = bytes.fromhex("020000000002")
# Documentation prefixes (RFC 5737, RFC 3849) for the outer headers of tunnels.
OUTER4_SRC = bytes([192, 0, 2, 1])
OUTER4_DST = bytes([192, 0, 2, 2])
OUTER6_SRC = bytes.fromhex("20010db8000000000000000000000001")
OUTER6_DST = bytes.fromhex("20010db8000000000000000000000002")


# --- capture files -------------------------------------------------------------------------


def write_pcap(
    path: Path,
    frames: Iterable[tuple[float, bytes]] | Iterable[tuple[int, int, bytes]],
    linktype: int = 1,
    *,
    order: str = "<",
    nanos: bool = False,
) -> Path:
    """A classic pcap; frames are (seconds, data) or (whole seconds, fraction units, data)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 262144, linktype)]
    for item in frames:
        if len(item) == 2:
            ts, data = item
            units = 1_000_000_000 if nanos else 1_000_000
            sec = int(ts)
            frac = round((ts - sec) * units)
        else:
            sec, frac, data = item
        out.append(struct.pack(order + "IIII", sec, frac, len(data), len(data)) + data)
    path.write_bytes(b"".join(out))
    return path


def read_pcap_records(path: Path) -> tuple[int, list[tuple[int, int, bytes]], int]:
    """Raw records of a little-endian microsecond pcap: (linktype, [(sec, usec, data)], snap)."""
    raw = path.read_bytes()
    magic, _, _, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert magic == 0xA1B2C3D4, "helper only reads little-endian microsecond pcap"
    records = []
    off = 24
    while off < len(raw):
        sec, frac, caplen, _origlen = struct.unpack_from("<IIII", raw, off)
        records.append((sec, frac, raw[off + 16 : off + 16 + caplen]))
        off += 16 + caplen
    return linktype, records, snaplen


def pcapng_block(btype: int, body: bytes, order: str = "<") -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", btype, length) + body + struct.pack(order + "I", length)


def pcapng_option(code: int, value: bytes, order: str = "<") -> bytes:
    return struct.pack(order + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def pcapng_shb(order: str = "<") -> bytes:
    return pcapng_block(0x0A0D0D0A, struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1), order)


def pcapng_idb(linktype: int, tsresol: int | None = None, order: str = "<") -> bytes:
    options = b""
    if tsresol is not None:
        options = pcapng_option(9, bytes([tsresol]), order) + pcapng_option(0, b"", order)
    return pcapng_block(1, struct.pack(order + "HHI", linktype, 0, 0) + options, order)


def pcapng_epb(ifid: int, units: int, data: bytes, order: str = "<") -> bytes:
    head = struct.pack(order + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return pcapng_block(6, head + data, order)


# --- packets -------------------------------------------------------------------------------


def ethernet(
    payload: bytes, ethertype: int = 0x0800, tags: Sequence[tuple[int, int]] = ()
) -> bytes:
    """Ethernet II; ``tags`` are (TPID, VLAN id) from the outermost in."""
    header = ETH_DST + ETH_SRC
    for tpid, vid in tags:
        header += struct.pack("!HH", tpid, vid)
    return header + struct.pack("!H", ethertype) + payload


def ipv4(
    src: bytes,
    dst: bytes,
    proto: int,
    payload: bytes,
    *,
    ident: int = 0,
    offset: int = 0,
    more: bool = False,
    options: bytes = b"",
) -> bytes:
    ihl = 5 + len(options) // 4
    frag = (0x2000 if more else 0) | (offset // 8)
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), ident, frag, 64, proto, 0, src, dst
    )
    return header + options + payload


def ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), next_header, 64, src, dst) + payload


def ipv6_fragment(next_header: int, offset: int, more: bool, ident: int, data: bytes) -> bytes:
    return struct.pack("!BBHI", next_header, 0, offset | int(more), ident) + data


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def gre(proto: int, payload: bytes, *, key: int | None = None, seq: int | None = None) -> bytes:
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq is not None else 0)
    header = struct.pack("!HH", flags, proto)
    if key is not None:
        header += struct.pack("!I", key)
    if seq is not None:
        header += struct.pack("!I", seq)
    return header + payload


def vxlan(vni: int, frame: bytes) -> bytes:
    return struct.pack("!II", 0x08000000, vni << 8) + frame


def erspan2(session: int, frame: bytes) -> bytes:
    return struct.pack("!HHI", 0x1000 | 0, session & 0x3FF, 0) + frame


def erspan3(session: int, frame: bytes, *, subheader: bool = False, frame_type: int = 0) -> bytes:
    word0 = (2 << 28) | (session & 0x3FF)
    word2 = (frame_type << 10) | (1 if subheader else 0)
    header = struct.pack("!III", word0, 0x01020304, word2)
    if subheader:
        header += struct.pack("!II", (3 << 26) | 7, 0x0A0B0C0D)  # platform id 3, port id 7
    return header + frame


def linux_sll(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHH8sH", 0, 1, 6, ETH_SRC + b"\x00\x00", protocol) + payload


def linux_sll2(payload: bytes, protocol: int = 0x0800) -> bytes:
    return struct.pack("!HHIHBB8s", protocol, 0, 2, 1, 0, 6, ETH_SRC + b"\x00\x00") + payload


# --- real packets --------------------------------------------------------------------------


def ip_packets(path: Path) -> list[tuple[float, int, bytes]]:
    """(time, IP version, IP packet bytes) of every IP frame of a capture."""
    packets = []
    with CaptureReader(path) as reader:
        for frame in reader:
            version, off = network_start(frame.linktype, frame.data, Counter())
            if version:
                packets.append((frame.ts, version, frame.data[off:]))
    return packets


def first_udp_packet(path: Path, starts: bytes) -> bytes:
    """The first IPv4/UDP packet of a capture whose UDP payload starts with ``starts``."""
    for _ts, version, packet in ip_packets(path):
        if version == 4 and packet[9] == 17:
            ihl = (packet[0] & 0x0F) * 4
            length = struct.unpack_from("!H", packet, 2)[0]
            packet = packet[:length]
            if packet[ihl + 8 :].startswith(starts):
                return packet
    raise AssertionError(f"no UDP payload starting with {starts!r} in {path.name}")


def frames_of(path: Path) -> list[Frame]:
    with CaptureReader(path) as reader:
        return list(reader)


def sip_call(
    call_id: str, caller: str, callee: str, headers: Sequence[tuple[str, str]] = ()
) -> list[tuple[bool, bytes]]:
    """The SIP messages of one answered call without media, as (sent by the caller, message):
    INVITE (carrying ``headers`` too), 200 OK, ACK, BYE from the caller, 200 OK."""
    uri, answered = f"sip:100@{callee}", f"To: <sip:100@{callee}>;tag=b2"

    def message(start: str, to: str, cseq: str, extra: Sequence[tuple[str, str]] = ()) -> bytes:
        lines = [
            start,
            f"Via: SIP/2.0/UDP {caller}:5060;branch=z9hG4bK-{cseq.replace(' ', '-')}",
            f"From: <sip:200@{caller}>;tag=a1",
            to,
            f"Call-ID: {call_id}",
            f"CSeq: {cseq}",
            *(f"{name}: {value}" for name, value in extra),
            "Content-Length: 0",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    return [
        (True, message(f"INVITE {uri} SIP/2.0", f"To: <{uri}>", "1 INVITE", headers)),
        (False, message("SIP/2.0 200 OK", answered, "1 INVITE")),
        (True, message(f"ACK {uri} SIP/2.0", answered, "1 ACK")),
        (True, message(f"BYE {uri} SIP/2.0", answered, "2 BYE")),
        (False, message("SIP/2.0 200 OK", answered, "2 BYE")),
    ]
