"""Decapsulation of the tunnels that remote mirroring uses: GRE, ERSPAN II/III and VXLAN.

IP-in-IP needs no parsing of its own (the inner packet starts right after the outer header), so
the decoder handles protocols 4 and 41 directly. Each function here returns
``(inner, offset)``: ``inner`` is ``INNER_IPV4``/``INNER_IPV6`` for an IP packet or
``INNER_ETHERNET`` for an Ethernet frame starting at ``offset``, or ``INNER_NONE`` when there is
nothing usable, which has then been counted in ``counters``.
"""

from __future__ import annotations

import struct
from collections import Counter

from gateway.capture.linklayer import ethertype_payload

VXLAN_PORT = 4789
INNER_NONE = 0
INNER_ETHERNET = 1
INNER_IPV4 = 4
INNER_IPV6 = 6

_GRE_CSUM = 0x8000
_GRE_ROUTING = 0x4000
_GRE_KEY = 0x2000
_GRE_SEQ = 0x1000
_GRE_VERSION = 0x0007
_GRE_TEB = 0x6558  # Transparent Ethernet Bridging
_GRE_ERSPAN2 = 0x88BE  # ERSPAN type II, or type I when the GRE sequence bit is clear
_GRE_ERSPAN3 = 0x22EB
_ERSPAN3_FT_ETHERNET = 0
_ERSPAN3_FT_IP = 2

_u16x2 = struct.Struct("!HH").unpack_from


def vxlan(data: bytes, off: int, end: int, counters: Counter[str]) -> int:
    """Where the Ethernet frame inside the VXLAN header (RFC 7348) at ``off`` starts, or -1.

    -1 means the UDP payload sent to the VXLAN port is not VXLAN and is an ordinary datagram.
    Only the I flag (a VNI is present) is required: the other flags are reserved, and checking
    them would drop traffic from newer senders. RTP sent to the port by coincidence has bit
    0x08 of its first byte clear (version 2 sets 0x80 and the CSRC count rarely reaches 8).
    """
    if end - off < 8 + 14 or not data[off] & 0x08:
        return -1
    counters["tunnel.vxlan"] += 1
    return off + 8


def gre(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    """The payload of a GRE header (RFC 2784/2890) at ``off``, through ERSPAN if present."""
    if end - off < 4:
        counters["gre.malformed"] += 1
        return INNER_NONE, 0
    flags, proto = _u16x2(data, off)
    if flags & _GRE_VERSION or flags & _GRE_ROUTING:
        # Version 1 is PPTP's enhanced GRE; source routing was deprecated by RFC 2784.
        counters["gre.unsupported"] += 1
        return INNER_NONE, 0
    off += 4
    if flags & _GRE_CSUM:
        off += 4
    if flags & _GRE_KEY:
        off += 4
    has_seq = bool(flags & _GRE_SEQ)
    if has_seq:
        off += 4
    if off > end:
        counters["gre.malformed"] += 1
        return INNER_NONE, 0
    if proto == _GRE_TEB:
        counters["tunnel.gre_teb"] += 1
        return INNER_ETHERNET, off
    if proto == _GRE_ERSPAN2:
        if not has_seq:
            counters["tunnel.erspan1"] += 1
            return INNER_ETHERNET, off
        return _erspan2(data, off, end, counters)
    if proto == _GRE_ERSPAN3:
        return _erspan3(data, off, end, counters)
    counters["tunnel.gre"] += 1
    version, off = ethertype_payload(data, off, end, proto, counters)
    return version, off


def _erspan2(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    if end - off < 8 or data[off] >> 4 != 1:
        counters["erspan.malformed"] += 1
        return INNER_NONE, 0
    counters["tunnel.erspan2"] += 1
    return INNER_ETHERNET, off + 8


def _erspan3(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    # 12-byte header; bit O (last bit) announces an 8-byte platform-specific subheader.
    if end - off < 12 or data[off] >> 4 != 2:
        counters["erspan.malformed"] += 1
        return INNER_NONE, 0
    frame_type = (data[off + 10] >> 2) & 0x1F
    has_subheader = data[off + 11] & 0x01
    off += 20 if has_subheader else 12
    if off > end:
        counters["erspan.malformed"] += 1
        return INNER_NONE, 0
    counters["tunnel.erspan3"] += 1
    if frame_type == _ERSPAN3_FT_ETHERNET:
        return INNER_ETHERNET, off
    if frame_type == _ERSPAN3_FT_IP and off < end and data[off] >> 4 in (4, 6):
        return data[off] >> 4, off
    counters["erspan.unsupported"] += 1
    return INNER_NONE, 0
