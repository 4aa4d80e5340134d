"""From captured frames to datagrams: link layer, tunnels, IP (with reassembly), UDP and TCP.

``PacketDecoder.decode`` returns the UDP payloads of a frame and the whole SIP messages that a
TCP segment completes. The common case on a mirror port, an untagged Ethernet frame carrying an
unfragmented IPv4/UDP packet, is decoded by one ``struct`` call without leaving ``decode``;
everything else takes the general path, where each malformed or unsupported layer is counted in
``counters`` (keys such as ``"ip4.malformed"``, ``"tunnel.gre_teb"``, ``"frag.reassembled"``).
"""

from __future__ import annotations

import struct
from collections import Counter

from gateway.capture.datagram import UDP, Datagram
from gateway.capture.ipfragments import FragmentReassembler
from gateway.capture.linklayer import ethernet, network_start
from gateway.capture.pcapfile import LINKTYPE_ETHERNET, Frame
from gateway.capture.tcpsip import TcpSipReassembler
from gateway.capture.tunnels import INNER_ETHERNET, VXLAN_PORT, gre, vxlan

PROTO_IPIP = 4
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_GRE = 47
# Tunnels inside tunnels beyond this depth are not something a mirror feed produces.
MAX_TUNNEL_DEPTH = 4

# IPv6 extension headers walked past to reach the transport header: hop-by-hop, routing,
# destination options, mobility, HIP, shim6, experimental (RFC 7045). AH is sized differently.
_IPV6_EXTENSIONS = frozenset((0, 43, 60, 135, 139, 140, 253, 254))
_IPV6_AH = 51
_IPV6_FRAGMENT = 44
_MAX_IPV6_EXTENSIONS = 8

# Ethernet + IPv4 without options + UDP, as one unpack: version/IHL, total length, fragment
# field, protocol, source, destination, source port, destination port, UDP length.
_FAST = struct.Struct("!12xHBxHxxHxBxx4s4sHHH").unpack_from
_IPV4 = struct.Struct("!BxHHHxBxx4s4s").unpack_from
_IPV6 = struct.Struct("!4xHBx16s16s").unpack_from
_UDP = struct.Struct("!HHH").unpack_from
_TCP = struct.Struct("!HHI4xH").unpack_from
_FRAG6 = struct.Struct("!BxHI").unpack_from
_u16 = struct.Struct("!H").unpack_from


class PacketDecoder:
    """Decode frames into ``Datagram``s, holding IP fragments and TCP streams in between.

    ``fragments`` and ``tcp`` are the reassemblers (pass your own to change their bounds); their
    ``len()`` and ``bytes_held`` tell how much state is held.

    Pending state expires by capture time as frames arrive; call ``expire(now)`` when no frame
    has arrived for a while (live capture) and ``flush()`` at the end of the input.
    """

    def __init__(
        self,
        *,
        fragments: FragmentReassembler | None = None,
        tcp: TcpSipReassembler | None = None,
        sweep_interval: float = 1.0,
    ) -> None:
        self.counters: Counter[str] = Counter()
        # Components built by the caller (to change their bounds) report into these counters too.
        self.fragments = FragmentReassembler(self.counters) if fragments is None else fragments
        self.fragments.counters = self.counters
        self.tcp = TcpSipReassembler(self.counters) if tcp is None else tcp
        self.tcp.counters = self.counters
        self._sweep_interval = sweep_interval
        self._next_sweep = float("-inf")

    def decode(self, frame: Frame) -> list[Datagram]:
        """The datagrams that ``frame`` yields (often one, sometimes none or several)."""
        ts = frame.ts
        if ts >= self._next_sweep:
            self.expire(ts)
        data = frame.data
        if frame.linktype == LINKTYPE_ETHERNET and len(data) >= 42:
            ethertype, vihl, length, frag, proto, src, dst, sport, dport, ulen = _FAST(data)
            if (
                ethertype == 0x0800
                and vihl == 0x45
                and proto == PROTO_UDP
                and not frag & 0x3FFF  # neither more-fragments nor an offset
                and 8 <= ulen <= length - 20
                and 14 + length <= len(data)
                and dport != VXLAN_PORT
            ):
                return [Datagram(ts, src, sport, dst, dport, UDP, data[42 : 34 + ulen])]
        version, off = network_start(frame.linktype, data, self.counters)
        if not version:
            return []
        return self._network(ts, data, off, len(data), version)

    def expire(self, now: float) -> None:
        """Drop fragments and TCP streams that have waited too long by capture time ``now``."""
        self.fragments.expire(now)
        self.tcp.expire(now)
        self._next_sweep = now + self._sweep_interval

    def flush(self) -> None:
        """End of input: drop what is pending, counting incomplete datagrams and messages."""
        self.fragments.clear()
        self.tcp.clear()

    def _network(self, ts: float, buf: bytes, off: int, end: int, version: int) -> list[Datagram]:
        """An IP packet at ``buf[off:end]``, following tunnels as deep as allowed."""
        counters = self.counters
        depth = 0
        while True:
            if version == 4:
                parsed = self._ipv4(ts, buf, off, end)
            else:
                parsed = self._ipv6(ts, buf, off, end)
            if parsed is None:
                return []
            proto, src, dst, buf, off, end = parsed
            if proto == PROTO_UDP:
                if end - off < 8:
                    counters["udp.malformed"] += 1
                    return []
                sport, dport, ulen = _UDP(buf, off)
                if ulen < 8 or ulen > end - off:
                    counters["udp.malformed" if ulen < 8 else "udp.truncated"] += 1
                    return []
                if dport == VXLAN_PORT:
                    inner = vxlan(buf, off + 8, off + ulen, counters)
                    if inner >= 0:
                        depth += 1
                        if depth > MAX_TUNNEL_DEPTH:
                            counters["tunnel.too_deep"] += 1
                            return []
                        end = off + ulen
                        version, off = ethernet(buf, inner, end, counters)
                        if not version:
                            return []
                        continue
                return [Datagram(ts, src, sport, dst, dport, UDP, buf[off + 8 : off + ulen])]
            if proto == PROTO_TCP:
                if end - off < 20:
                    counters["tcp.malformed"] += 1
                    return []
                sport, dport, seq, offset_flags = _TCP(buf, off)
                header = (offset_flags >> 12) * 4
                if header < 20 or header > end - off:
                    counters["tcp.malformed"] += 1
                    return []
                return self.tcp.segment(
                    ts, src, sport, dst, dport, seq, offset_flags & 0x3F, buf[off + header : end]
                )
            depth += 1
            if depth > MAX_TUNNEL_DEPTH:
                counters["tunnel.too_deep"] += 1
                return []
            if proto in (PROTO_IPIP, PROTO_IPV6):
                counters["tunnel.ipip" if proto == PROTO_IPIP else "tunnel.ipv6_in_ip"] += 1
                version = 4 if proto == PROTO_IPIP else 6
                if end - off < 1 or buf[off] >> 4 != version:
                    counters["tunnel.malformed"] += 1
                    return []
            elif proto == PROTO_GRE:
                version, off = gre(buf, off, end, counters)
                if version == INNER_ETHERNET:
                    version, off = ethernet(buf, off, end, counters)
                if not version:
                    return []
            else:
                counters["ip.other_proto"] += 1
                return []

    def _ipv4(
        self, ts: float, buf: bytes, off: int, end: int
    ) -> tuple[int, bytes, bytes, bytes, int, int] | None:
        """(protocol, source, destination, buffer, payload start, payload end) or None."""
        counters = self.counters
        if end - off < 20:
            counters["ip4.malformed"] += 1
            return None
        vihl, length, ident, frag, proto, src, dst = _IPV4(buf, off)
        header = (vihl & 0x0F) * 4
        if vihl >> 4 != 4 or header < 20:
            counters["ip4.malformed"] += 1
            return None
        if length == 0:
            # Captured on the sending host before segmentation offload filled in the length.
            counters["ip4.zero_length"] += 1
            length = end - off
        if length < header:
            counters["ip4.malformed"] += 1
            return None
        if length > end - off:
            counters["ip4.truncated"] += 1
            return None
        end = off + length  # drops Ethernet padding and trailers
        off += header
        if frag & 0x3FFF:
            counters["ip4.fragment"] += 1
            whole = self.fragments.add(
                ts,
                (src, dst, ident, proto),
                proto,
                (frag & 0x1FFF) * 8,
                bool(frag & 0x2000),
                buf[off:end],
            )
            if whole is None:
                return None
            proto, buf = whole
            off, end = 0, len(buf)
        return proto, src, dst, buf, off, end

    def _ipv6(
        self, ts: float, buf: bytes, off: int, end: int
    ) -> tuple[int, bytes, bytes, bytes, int, int] | None:
        """(protocol, source, destination, buffer, payload start, payload end) or None."""
        counters = self.counters
        if end - off < 40 or buf[off] >> 4 != 6:
            counters["ip6.malformed"] += 1
            return None
        length, proto, src, dst = _IPV6(buf, off)
        if length == 0:
            # A jumbogram, or a packet captured before segmentation offload.
            counters["ip6.zero_length"] += 1
            length = end - off - 40
        if length > end - off - 40:
            counters["ip6.truncated"] += 1
            return None
        end = off + 40 + length
        off += 40
        for _ in range(_MAX_IPV6_EXTENSIONS):
            if proto in _IPV6_EXTENSIONS or proto == _IPV6_AH:
                if end - off < 8:
                    counters["ip6.malformed"] += 1
                    return None
                size = (buf[off + 1] + 2) * 4 if proto == _IPV6_AH else (buf[off + 1] + 1) * 8
                proto = buf[off]
                off += size
                if off > end:
                    counters["ip6.malformed"] += 1
                    return None
            elif proto == _IPV6_FRAGMENT:
                if end - off < 8:
                    counters["ip6.malformed"] += 1
                    return None
                next_header, offset_more, ident = _FRAG6(buf, off)
                off += 8
                proto = next_header
                if offset_more == 0:
                    continue  # an atomic fragment (RFC 6946) is a whole datagram
                counters["ip6.fragment"] += 1
                whole = self.fragments.add(
                    ts,
                    (src, dst, ident),
                    next_header,
                    offset_more & 0xFFF8,
                    bool(offset_more & 1),
                    buf[off:end],
                )
                if whole is None:
                    return None
                proto, buf = whole
                off, end = 0, len(buf)
            else:
                return proto, src, dst, buf, off, end
        counters["ip6.too_many_extensions"] += 1
        return None
