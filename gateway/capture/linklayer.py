"""From a link-layer frame to the start of its IP packet.

Handled: Ethernet II with any stack of 802.1Q/802.1ad tags (bounded), PPPoE sessions, Linux
cooked captures (SLL and SLL2) and raw IP.

Each function returns ``(version, offset)``: ``version`` is 4 or 6 when an IP packet starts at
``offset``, or 0 when the frame carries nothing for us, which has then been counted in
``counters`` (non-IP traffic, malformed headers, unknown link types).
"""

from __future__ import annotations

import struct
from collections import Counter

from gateway.capture.pcapfile import (
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    LINKTYPE_RAW_BSD12,
    LINKTYPE_RAW_BSD14,
)

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
# 802.1Q, 802.1ad, and the pre-standard QinQ outer tag some switches still send.
VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
ETHERTYPE_PPPOE_SESSION = 0x8864
_PPP_IPV4 = 0x0021
_PPP_IPV6 = 0x0057
# More stacked tags than any provider network uses: beyond this a frame is treated as hostile.
MAX_VLAN_TAGS = 8

_RAW_LINKTYPES = frozenset((LINKTYPE_RAW, LINKTYPE_RAW_BSD12, LINKTYPE_RAW_BSD14))
_u16 = struct.Struct("!H").unpack_from


def network_start(linktype: int, data: bytes, counters: Counter[str]) -> tuple[int, int]:
    """Where the IP packet of a captured frame of ``linktype`` starts."""
    end = len(data)
    if linktype == LINKTYPE_ETHERNET:
        return ethernet(data, 0, end, counters)
    if linktype == LINKTYPE_LINUX_SLL:
        if end < 16:
            counters["sll.malformed"] += 1
            return 0, 0
        return ethertype_payload(data, 16, end, _u16(data, 14)[0], counters)
    if linktype == LINKTYPE_LINUX_SLL2:
        if end < 20:
            counters["sll2.malformed"] += 1
            return 0, 0
        return ethertype_payload(data, 20, end, _u16(data, 0)[0], counters)
    if linktype in _RAW_LINKTYPES:
        return raw_ip(data, 0, end, counters)
    if linktype == LINKTYPE_IPV4:
        return 4, 0
    if linktype == LINKTYPE_IPV6:
        return 6, 0
    counters["link.unsupported"] += 1
    return 0, 0


def ethernet(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    """An Ethernet II frame starting at ``off``, with any stack of VLAN tags."""
    if end - off < 14:
        counters["eth.malformed"] += 1
        return 0, 0
    return ethertype_payload(data, off + 14, end, _u16(data, off + 12)[0], counters)


def ethertype_payload(
    data: bytes, off: int, end: int, ethertype: int, counters: Counter[str]
) -> tuple[int, int]:
    """The payload at ``off`` of type ``ethertype``, after stripping VLAN tags."""
    if ethertype in VLAN_TPIDS:
        counters["link.vlan"] += 1
        tags = 0
        while ethertype in VLAN_TPIDS:
            tags += 1
            if tags > MAX_VLAN_TAGS:
                counters["vlan.too_deep"] += 1
                return 0, 0
            if end - off < 4:
                counters["vlan.malformed"] += 1
                return 0, 0
            ethertype = _u16(data, off + 2)[0]
            off += 4
    if ethertype == ETHERTYPE_IPV4:
        return 4, off
    if ethertype == ETHERTYPE_IPV6:
        return 6, off
    if ethertype == ETHERTYPE_PPPOE_SESSION:
        return _pppoe_session(data, off, end, counters)
    counters["link.non_ip"] += 1
    return 0, 0


def _pppoe_session(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    # RFC 2516: version/type 0x11, code 0 (session data), session id, length; then PPP protocol.
    if end - off < 8 or data[off] != 0x11 or data[off + 1] != 0:
        counters["pppoe.malformed"] += 1
        return 0, 0
    counters["link.pppoe"] += 1
    protocol = _u16(data, off + 6)[0]
    if protocol == _PPP_IPV4:
        return 4, off + 8
    if protocol == _PPP_IPV6:
        return 6, off + 8
    counters["link.non_ip"] += 1
    return 0, 0


def raw_ip(data: bytes, off: int, end: int, counters: Counter[str]) -> tuple[int, int]:
    """A bare IP packet whose version is given by its first nibble."""
    if end - off < 1:
        counters["ip.malformed"] += 1
        return 0, 0
    version = data[off] >> 4
    if version in (4, 6):
        return version, off
    counters["ip.malformed"] += 1
    return 0, 0
