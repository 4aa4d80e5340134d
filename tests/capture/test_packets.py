"""PacketDecoder against tshark on shared captures, and on tunnels and fragments built here."""

from __future__ import annotations

import random
import struct
from collections import Counter

import pytest

from gateway.capture.datagram import UDP, Datagram
from gateway.capture.ipfragments import MAX_FRAGMENTS_PER_DATAGRAM, FragmentReassembler
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import CaptureReader, Frame
from gateway.capture.tcpsip import looks_like_sip
from tests.capture.packet_helpers import (
    OUTER4_DST,
    OUTER4_SRC,
    OUTER6_DST,
    OUTER6_SRC,
    erspan2,
    erspan3,
    ethernet,
    first_udp_packet,
    frames_of,
    gre,
    ipv4,
    ipv6,
    ipv6_fragment,
    linux_sll2,
    udp,
    vxlan,
    write_pcap,
)
from tests.capture.tshark_reference import tshark_view

# Files chosen to cover every link type, tunnel and reassembly case found in the shared set.
TSHARK_FILES = [
    "SIP-RTP-Normal_Call_two_parties.pcap",  # Ethernet, ICMP errors quoting UDP, TCP, IPv6
    "SIP-SRTP-Normal_Call_two_parties.pcap",  # IPv4 fragments
    "ipv6frag.pcap",  # Linux cooked, IPv6 fragments
    "erspan_sip_ipv4_udp.pcapng",  # GRE with Transparent Ethernet Bridging
    "ipip.pcap",  # IP-in-IP, SIP over TCP
    "DTMFsipinfo.pcap",  # PPPoE
    "rtp.pcapng",  # 802.1Q
    "sip_ipv6_udp.pcap",
    "sip_ipv4_tcp_retrans.pcap",  # Linux cooked, UDP and TCP SIP
    "SIP_CALL_RTP_G711",  # no extension, background noise
    "aaa.pcap",
    "b2bua-asterisk.pcapng",
    "generated/sipp-loopback-pcma-call.pcapng",
]


def decode_all(frames: list[Frame], decoder: PacketDecoder | None = None) -> list[Datagram]:
    decoder = decoder or PacketDecoder()
    return [dg for frame in frames for dg in decoder.decode(frame)]


def cseq_of(payload: bytes) -> str:
    for line in payload.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"cseq":
            return " ".join(value.decode().split())
    raise AssertionError("no CSeq")


@pytest.mark.parametrize("name", TSHARK_FILES)
def test_udp_datagrams_and_sip_messages_match_tshark(pcaps_dir, tshark, name):
    path = pcaps_dir / name
    datagrams = decode_all(frames_of(path))
    view = tshark_view(tshark, path)
    # tshark shows a reassembled datagram once, in the frame that completed it, and also
    # dissects the UDP header quoted inside ICMP errors, which are not datagrams.
    expected_udp = [f.udp for f in view if f.udp and not f.icmp]
    ours_udp = [(dg.sport, dg.dport, len(dg.payload) + 8) for dg in datagrams if dg.proto == UDP]
    assert ours_udp == expected_udp
    expected_sip = [
        " ".join(c.split()) for f in view if f.udp and not f.icmp and not f.tcp for c in f.cseqs
    ]
    ours_sip = [
        cseq_of(dg.payload) for dg in datagrams if dg.proto == UDP and looks_like_sip(dg.payload)
    ]
    assert ours_sip == expected_sip


def test_every_shared_capture_decodes(pcaps_dir):
    for path in sorted(pcaps_dir.rglob("*")):
        if not path.is_file() or path.suffix == ".md" or path.name == "c07-sip-r2.cap":
            continue
        decoder = PacketDecoder()
        with CaptureReader(path) as reader:
            datagrams = [dg for frame in reader for dg in decoder.decode(frame)]
        decoder.flush()
        if path.name == "sip_sctp.pcap":
            # SIP over SCTP is out of scope: counted, not decoded.
            assert not datagrams and decoder.counters["ip.other_proto"] == 5
        else:
            assert datagrams, path.name
        assert not any(key.endswith(".malformed") for key in decoder.counters), path.name


def test_real_tunnels_are_counted(pcaps_dir):
    decoder = PacketDecoder()
    decode_all(frames_of(pcaps_dir / "erspan_sip_ipv4_udp.pcapng"), decoder)
    decode_all(frames_of(pcaps_dir / "ipip.pcap"), decoder)
    decode_all(frames_of(pcaps_dir / "ipv6frag.pcap"), decoder)
    assert decoder.counters["tunnel.gre_teb"] == 140
    assert decoder.counters["tunnel.ipip"] == 2
    assert decoder.counters["frag.reassembled"] == 2


# --- tunnels built around real packets -------------------------------------------------------


@pytest.fixture(scope="module")
def inner(pcaps_dir) -> dict[str, bytes]:
    """Real IP packets to wrap: a SIP INVITE and an RTP packet over IPv4, SIP over IPv6."""
    return {
        "sip4": first_udp_packet(pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap", b"INVITE"),
        "rtp4": first_udp_packet(pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap", b"\x80\x00"),
        "sip6": frames_of(pcaps_dir / "sip_ipv6_udp.pcap")[0].data[14:],
    }


def tunnel_cases(inner: dict[str, bytes]) -> dict[str, tuple[bytes, bytes, str]]:
    """name: (Ethernet frame, inner IP packet it carries, counter the tunnel must bump)."""
    sip4, rtp4, sip6 = inner["sip4"], inner["rtp4"], inner["sip6"]
    o4 = OUTER4_SRC, OUTER4_DST
    return {
        "vxlan": (
            ethernet(ipv4(*o4, 17, udp(50000, 4789, vxlan(42, ethernet(sip4))))),
            sip4,
            "tunnel.vxlan",
        ),
        "vxlan_ipv6_outer": (
            ethernet(
                ipv6(OUTER6_SRC, OUTER6_DST, 17, udp(50000, 4789, vxlan(7, ethernet(rtp4)))),
                0x86DD,
            ),
            rtp4,
            "tunnel.vxlan",
        ),
        "erspan2": (
            ethernet(ipv4(*o4, 47, gre(0x88BE, erspan2(5, ethernet(sip4)), seq=9))),
            sip4,
            "tunnel.erspan2",
        ),
        "erspan3": (
            ethernet(ipv4(*o4, 47, gre(0x22EB, erspan3(5, ethernet(rtp4)), seq=1))),
            rtp4,
            "tunnel.erspan3",
        ),
        "erspan3_subheader": (
            ethernet(ipv4(*o4, 47, gre(0x22EB, erspan3(5, ethernet(sip4), subheader=True), seq=2))),
            sip4,
            "tunnel.erspan3",
        ),
        "erspan1": (
            ethernet(ipv4(*o4, 47, gre(0x88BE, ethernet(sip4)))),
            sip4,
            "tunnel.erspan1",
        ),
        "gre_ipv4_key": (
            ethernet(ipv4(*o4, 47, gre(0x0800, rtp4, key=77))),
            rtp4,
            "tunnel.gre",
        ),
        "gre_teb_vlan": (
            ethernet(ipv4(*o4, 47, gre(0x6558, ethernet(sip4, tags=[(0x8100, 12)])))),
            sip4,
            "tunnel.gre_teb",
        ),
        "qinq": (ethernet(sip4, tags=[(0x88A8, 100), (0x8100, 200)]), sip4, "link.vlan"),
        "triple_tag": (
            ethernet(rtp4, tags=[(0x88A8, 1), (0x8100, 2), (0x8100, 3)]),
            rtp4,
            "link.vlan",
        ),
        "ipv6_in_ipv4": (ethernet(ipv4(*o4, 41, sip6)), sip6, "tunnel.ipv6_in_ip"),
        "ipv4_in_ipv6": (
            ethernet(ipv6(OUTER6_SRC, OUTER6_DST, 4, sip4), 0x86DD),
            sip4,
            "tunnel.ipip",
        ),
        "vxlan_in_gre": (
            ethernet(
                ipv4(*o4, 47, gre(0x0800, ipv4(*o4, 17, udp(1, 4789, vxlan(3, ethernet(sip4))))))
            ),
            sip4,
            "tunnel.vxlan",
        ),
    }


def plain(packet: bytes) -> Datagram:
    ethertype = 0x86DD if packet[0] >> 4 == 6 else 0x0800
    out = PacketDecoder().decode(Frame(1.0, 1, ethernet(packet, ethertype)))
    assert len(out) == 1
    return out[0]


def test_tunnels_yield_the_inner_datagram(inner):
    for name, (frame, packet, counter) in tunnel_cases(inner).items():
        decoder = PacketDecoder()
        out = decoder.decode(Frame(1.0, 1, frame))
        assert out == [plain(packet)], name
        assert decoder.counters[counter] == 1, name
        assert not any(key.endswith((".malformed", ".unsupported")) for key in decoder.counters)


def test_tshark_sees_the_same_inner_datagrams(inner, tmp_path, tshark):
    cases = tunnel_cases(inner)
    path = write_pcap(
        tmp_path / "tunnels.pcap", [(1.0 + i, c[0]) for i, c in enumerate(cases.values())]
    )
    view = tshark_view(tshark, path)
    for (name, (frame, _packet, _counter)), reference in zip(cases.items(), view, strict=True):
        (dg,) = PacketDecoder().decode(Frame(1.0, 1, frame))
        assert reference.udp == (dg.sport, dg.dport, len(dg.payload) + 8), name


def test_sll2_and_raw_ip_link_types(inner):
    sip4, sip6 = inner["sip4"], inner["sip6"]
    for linktype, data, expected in [
        (276, linux_sll2(sip4), sip4),
        (276, linux_sll2(struct.pack("!HH", 3, 0x86DD) + sip6, 0x8100), sip6),
        (101, sip4, sip4),
        (12, sip6, sip6),
        (228, sip4, sip4),
        (229, sip6, sip6),
    ]:
        assert PacketDecoder().decode(Frame(2.0, linktype, data)) == [
            Datagram(2.0, *astuple_without_ts(plain(expected)))
        ]


def astuple_without_ts(dg: Datagram) -> tuple:
    return dg.src, dg.sport, dg.dst, dg.dport, dg.proto, dg.payload


def test_tunnel_nesting_is_bounded(inner):
    o4 = OUTER4_SRC, OUTER4_DST
    packet = inner["sip4"]
    for _ in range(5):
        packet = ipv4(*o4, 4, packet)
    decoder = PacketDecoder()
    assert decoder.decode(Frame(1.0, 1, ethernet(packet))) == []
    assert decoder.counters["tunnel.too_deep"] == 1
    tags = [(0x8100, i) for i in range(9)]
    assert decoder.decode(Frame(1.0, 1, ethernet(inner["sip4"], tags=tags))) == []
    assert decoder.counters["vlan.too_deep"] == 1


def test_slow_path_agrees_with_fast_path(inner):
    sip4 = inner["sip4"]
    fast = plain(sip4)
    # Same packet with a 4-byte IP option (IHL 6), which the fast path leaves to the general one.
    ihl = (sip4[0] & 0x0F) * 4
    with_option = bytearray(sip4[:ihl] + b"\x01\x01\x01\x00" + sip4[ihl:])
    with_option[0] = 0x46
    struct.pack_into("!H", with_option, 2, len(with_option))
    assert plain(bytes(with_option)) == fast
    # Ethernet padding and a trailer after the IP packet are not payload.
    padded = ethernet(sip4) + bytes(30)
    assert PacketDecoder().decode(Frame(1.0, 1, padded)) == [fast]
    # Total length 0: captured on the sender before segmentation offload set it.
    zero = bytearray(sip4)
    struct.pack_into("!H", zero, 2, 0)
    decoder = PacketDecoder()
    assert decoder.decode(Frame(1.0, 1, ethernet(bytes(zero)))) == [fast]
    assert decoder.counters["ip4.zero_length"] == 1


@pytest.mark.parametrize(
    ("name", "frame", "counter"),
    [
        ("short ethernet", Frame(0, 1, b"\x00" * 10), "eth.malformed"),
        ("arp", Frame(0, 1, ethernet(bytes(28), 0x0806)), "link.non_ip"),
        ("unknown link type", Frame(0, 147, bytes(40)), "link.unsupported"),
        ("short sll", Frame(0, 113, bytes(10)), "sll.malformed"),
        ("raw not ip", Frame(0, 101, b"\x50" + bytes(30)), "ip.malformed"),
        ("ipv4 short", Frame(0, 1, ethernet(b"\x45" + bytes(10))), "ip4.malformed"),
        ("ipv4 ihl 3", Frame(0, 1, ethernet(b"\x43" + bytes(40))), "ip4.malformed"),
        (
            "ipv4 longer than captured",
            Frame(0, 1, ethernet(ipv4(OUTER4_SRC, OUTER4_DST, 17, udp(1, 2, bytes(100)))[:60])),
            "ip4.truncated",
        ),
        (
            "udp length below 8",
            Frame(
                0, 1, ethernet(ipv4(OUTER4_SRC, OUTER4_DST, 17, struct.pack("!HHHH", 1, 2, 3, 0)))
            ),
            "udp.malformed",
        ),
        (
            "tcp data offset too small",
            Frame(
                0,
                1,
                ethernet(
                    ipv4(
                        OUTER4_SRC,
                        OUTER4_DST,
                        6,
                        struct.pack("!HHIIHHHH", 1, 2, 3, 4, 0x2000, 0, 0, 0),
                    )
                ),
            ),
            "tcp.malformed",
        ),
        ("ipv6 short", Frame(0, 1, ethernet(b"\x60" + bytes(20), 0x86DD)), "ip6.malformed"),
        (
            "gre version 1",
            Frame(
                0,
                1,
                ethernet(
                    ipv4(OUTER4_SRC, OUTER4_DST, 47, struct.pack("!HH", 1, 0x880B) + bytes(30))
                ),
            ),
            "gre.unsupported",
        ),
        (
            "erspan bad version",
            Frame(0, 1, ethernet(ipv4(OUTER4_SRC, OUTER4_DST, 47, gre(0x88BE, bytes(40), seq=1)))),
            "erspan.malformed",
        ),
        (
            "icmp",
            Frame(0, 1, ethernet(ipv4(OUTER4_SRC, OUTER4_DST, 1, bytes(16)))),
            "ip.other_proto",
        ),
    ],
)
def test_malformed_layers_are_counted(name, frame, counter):
    decoder = PacketDecoder()
    assert decoder.decode(frame) == [], name
    assert decoder.counters[counter] == 1, (name, decoder.counters)


# --- fragments -------------------------------------------------------------------------------


def fragments4(packet: bytes, size: int, ident: int = 0x1234) -> list[bytes]:
    ihl = (packet[0] & 0x0F) * 4
    src, dst, proto = packet[12:16], packet[16:20], packet[9]
    payload = packet[ihl:]
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off : off + size]
        out.append(
            ipv4(src, dst, proto, piece, ident=ident, offset=off, more=off + size < len(payload))
        )
    return out


def fragments6(packet: bytes, size: int, ident: int = 0xABCDEF) -> list[bytes]:
    src, dst, next_header = packet[8:24], packet[24:40], packet[6]
    payload = packet[40:]
    return [
        ipv6(
            src,
            dst,
            44,
            ipv6_fragment(
                next_header, off, off + size < len(payload), ident, payload[off : off + size]
            ),
        )
        for off in range(0, len(payload), size)
    ]


@pytest.mark.parametrize("version", [4, 6])
def test_fragments_in_any_order_with_duplicates_reassemble(inner, version):
    packet = inner["sip4"] if version == 4 else inner["sip6"]
    pieces = fragments4(packet, 200) if version == 4 else fragments6(packet, 200)
    assert len(pieces) >= 3
    expected = plain(packet)
    ethertype = 0x0800 if version == 4 else 0x86DD
    rng = random.Random(version)
    for _ in range(20):
        order = pieces + rng.sample(pieces, 2)  # two duplicates
        rng.shuffle(order)
        decoder = PacketDecoder()
        out = [dg for p in order for dg in decoder.decode(Frame(5.0, 1, ethernet(p, ethertype)))]
        assert out == [Datagram(5.0, *astuple_without_ts(expected))]


@pytest.mark.parametrize("version", [4, 6])
def test_overlapping_fragment_discards_the_datagram(inner, version):
    packet = inner["sip4"] if version == 4 else inner["sip6"]
    pieces = fragments4(packet, 200) if version == 4 else fragments6(packet, 200)
    # A second first fragment that covers 16 bytes more than the first: the kind of overlap
    # that rewrites a header already inspected.
    longer = fragments4(packet, 216) if version == 4 else fragments6(packet, 216)
    ethertype = 0x0800 if version == 4 else 0x86DD
    decoder = PacketDecoder()
    frames = [pieces[0], longer[0], *pieces[1:]]
    out = [dg for p in frames for dg in decoder.decode(Frame(5.0, 1, ethernet(p, ethertype)))]
    assert out == []
    assert decoder.counters["frag.overlap"] == 1


def test_incomplete_datagrams_time_out_and_are_bounded(inner):
    pieces = fragments4(inner["sip4"], 200)
    decoder = PacketDecoder()
    decoder.decode(Frame(10.0, 1, ethernet(pieces[0])))
    decoder.decode(Frame(45.0, 1, ethernet(inner["rtp4"])))  # 35 s later: past the timeout
    decoder.decode(Frame(45.5, 1, ethernet(pieces[1])))
    assert decoder.counters["frag.timeout"] == 1
    assert [dg for p in pieces[2:] for dg in decoder.decode(Frame(46.0, 1, ethernet(p)))] == []
    decoder.flush()
    assert decoder.counters["frag.incomplete"] == 1

    reassembler = FragmentReassembler(Counter(), max_datagrams=16, max_bytes=2000)
    for ident in range(100):
        reassembler.add(1.0, ("a", ident), 17, 0, True, bytes(200))
        assert len(reassembler) <= 16
        assert reassembler.bytes_held <= 2000
    assert reassembler.counters["frag.evicted"] == 100 - 2000 // 200


def test_fragment_beyond_the_size_limit_is_refused():
    reassembler = FragmentReassembler(Counter())
    assert reassembler.add(1.0, "k", 17, 65528, False, bytes(100)) is None
    assert reassembler.counters["frag.too_big"] == 1
    assert len(reassembler) == 0


def test_decoder_uses_reassemblers_given_to_it(inner):
    fragments = FragmentReassembler(Counter(), max_datagrams=1)
    decoder = PacketDecoder(fragments=fragments)
    assert decoder.fragments is fragments and fragments.counters is decoder.counters
    first, second = fragments4(inner["sip4"], 200)[0], fragments4(inner["rtp4"], 8, ident=9)[0]
    decoder.decode(Frame(1.0, 1, ethernet(first)))
    decoder.decode(Frame(1.0, 1, ethernet(second)))
    assert len(fragments) == 1
    assert decoder.counters["frag.evicted"] == 1


def test_too_many_fragments_for_one_datagram_is_refused():
    reassembler = FragmentReassembler(Counter())
    for i in range(MAX_FRAGMENTS_PER_DATAGRAM + 1):
        assert reassembler.add(1.0, "k", 17, i * 8, True, bytes(8)) is None
    assert reassembler.counters["frag.too_many"] == 1
    assert len(reassembler) == 0
