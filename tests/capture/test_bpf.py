"""The kernel filter: its layout, its decisions, libpcap's decisions, and the kernel's own.

Three independent judges are compared with the program: a plain-Python statement of what must
pass (``reference``), libpcap's compiler given the same policy as a filter expression (run in a
small cBPF interpreter and in the kernel), and the Linux kernel itself, which runs the program
on real UDP/TCP traffic over IPv4 and IPv6 loopback and on crafted frames injected into ``lo``.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.bpf import (
    JA,
    MAX_INSTRUCTIONS,
    RET_K,
    FilterProgram,
    attach,
    build_filter,
)
from tests.capture.live_helpers import (
    Flow,
    PortPool,
    capture_socket,
    drain,
    flow_of,
    kernel_drops,
    require_packet_sockets,
)
from tests.capture.packet_helpers import ethernet, ipv4, ipv6, ipv6_fragment, udp, write_pcap

LO4, LO6 = socket.inet_pton(socket.AF_INET, "127.0.0.1"), socket.inet_pton(socket.AF_INET6, "::1")
TPIDS = (0x8100, 0x88A8, 0x9100)
IPV6_EXTENSIONS = (0, 43, 44, 60, 51, 135, 139, 140, 253, 254)
SNAPLEN = 65535

# --- a small cBPF interpreter (the subset that both this filter and libpcap emit) ---------------


class _OutOfPacket(Exception):
    pass


def _alu(op: int, a: int, operand: int) -> int:
    if op == 0x80:
        return -a & 0xFFFFFFFF
    result = {
        0x00: a + operand,
        0x10: a - operand,
        0x20: a * operand,
        0x30: a // operand if operand else None,
        0x40: a | operand,
        0x50: a & operand,
        0x60: a << (operand & 31),
        0x70: a >> (operand & 31),
        0x90: a % operand if operand else None,
        0xA0: a ^ operand,
    }[op]
    if result is None:  # division by zero ends the program with 0
        raise _OutOfPacket
    return result & 0xFFFFFFFF


def run_cbpf(program: Sequence[tuple[int, int, int, int]], packet: bytes) -> int:
    """What the kernel returns for ``packet``: bytes to keep, 0 to drop."""
    a = x = pc = 0
    mem = [0] * 16

    def load(offset: int, size: int) -> int:
        if offset < 0 or offset + size > len(packet):
            raise _OutOfPacket  # the kernel rejects a packet the program reads past
        return int.from_bytes(packet[offset : offset + size], "big")

    try:
        while True:
            code, jt, jf, k = program[pc]
            pc += 1
            cls, mode = code & 0x07, code & 0xE0
            size = {0x00: 4, 0x08: 2, 0x10: 1}.get(code & 0x18, 0)
            if cls in (0x00, 0x01):  # LD, LDX
                if mode == 0x00:
                    value = k
                elif mode == 0x20:
                    value = load(k, size)
                elif mode == 0x40:
                    value = load(x + k, size)
                elif mode == 0x60:
                    value = mem[k]
                elif mode == 0x80:
                    value = len(packet)
                else:  # MSH
                    value = (load(k, 1) & 0x0F) * 4
                if cls == 0x00:
                    a = value
                else:
                    x = value
            elif cls == 0x02:
                mem[k] = a
            elif cls == 0x03:
                mem[k] = x
            elif cls == 0x04:
                a = _alu(code & 0xF0, a, x if code & 0x08 else k)
            elif cls == 0x05:
                op, operand = code & 0xF0, x if code & 0x08 else k
                if op == 0x00:
                    pc += k
                    continue
                taken = {0x10: a == operand, 0x20: a > operand, 0x30: a >= operand}.get(
                    op, bool(a & operand)
                )
                pc += jt if taken else jf
            elif cls == 0x06:
                return a if code & 0x18 == 0x10 else k
            elif code & 0xF8 == 0x00:  # TAX
                x = a
            else:  # TXA
                a = x
    except _OutOfPacket:
        return 0


# --- what must pass, stated plainly -------------------------------------------------------------


def reference(frame: bytes, sip: set[int], media: set[int]) -> bool:
    """The filter's contract. A header that ends early rejects, unless a port read before the
    end already matched (the program reads the source port before the destination port)."""

    def u16(offset: int) -> int | None:
        return struct.unpack_from("!H", frame, offset)[0] if offset + 2 <= len(frame) else None

    ethertype, link = u16(12), 14
    if ethertype in TPIDS:
        ethertype, link = u16(16), 18
    if ethertype == 0x0800:
        if len(frame) < link + 10 or frame[link + 9] not in (6, 17):
            return False
        proto = frame[link + 9]
        if struct.unpack_from("!H", frame, link + 6)[0] & 0x1FFF:  # a later fragment
            return True
        start = link + (frame[link] & 0x0F) * 4
    elif ethertype == 0x86DD:
        if len(frame) < link + 7:
            return False
        proto = frame[link + 6]
        if proto in IPV6_EXTENSIONS:
            return True
        if proto not in (6, 17):
            return False
        start = link + 40
    else:
        return False
    ports = sip | media if proto == 17 else sip
    for offset in (start, start + 2):
        port = u16(offset)
        if port is None:
            return False
        if port in ports:
            return True
    return False


def kernel_view(frame: bytes) -> bytes:
    """Linux moves an 802.1Q/802.1ad tag out of the frame before packet sockets see it."""
    if len(frame) >= 18 and struct.unpack_from("!H", frame, 12)[0] in (0x8100, 0x88A8):
        return frame[:12] + frame[16:]
    return frame


# --- crafted frames -------------------------------------------------------------------------


def tcp(sport: int, dport: int, payload: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, 0x18, 65535, 0, 0) + payload


def dont_fragment(packet: bytes) -> bytes:
    return packet[:6] + bytes([packet[6] | 0x40]) + packet[7:]


def crafted_frames(sip: set[int], media: set[int]) -> list[tuple[str, bytes]]:
    """Frames on both sides of every rule, for the port sets used in the comparisons."""
    s1, s2 = sorted(sip)[:2]
    m = sorted(media)
    other = 33333
    out: list[tuple[str, bytes]] = []
    icmp = b"\x08\x00\x00\x00\x00\x01\x00\x01"
    transports = [
        ("udp-to-sip", 17, udp(other, s1, b"x")),
        ("udp-from-sip", 17, udp(s2, other, b"x")),
        ("tcp-to-sip", 6, tcp(other, s1)),
        ("tcp-from-sip", 6, tcp(s2, other)),
        ("udp-to-media", 17, udp(other, m[0], b"x")),
        ("udp-from-media", 17, udp(m[-1], other, b"x")),
        ("udp-below-range", 17, udp(other, m[1] - 1, b"x")),
        ("udp-range-start", 17, udp(other, m[1], b"x")),
        ("udp-range-end", 17, udp(m[3], other, b"x")),
        ("udp-above-range", 17, udp(other, m[3] + 1, b"x")),
        ("tcp-to-media", 6, tcp(other, m[0])),
        ("udp-other", 17, udp(other, other + 1, b"x")),
        ("tcp-other", 6, tcp(other, other + 1)),
    ]
    for tag in (None, *TPIDS):
        tags = [] if tag is None else [(tag, 7)]
        link = "untagged" if tag is None else f"{tag:#06x}"
        for name, proto, segment in transports:
            out.append((f"v4-{link}-{name}", ethernet(ipv4(LO4, LO4, proto, segment), tags=tags)))
            out.append(
                (f"v6-{link}-{name}", ethernet(ipv6(LO6, LO6, proto, segment), 0x86DD, tags=tags))
            )
        out.append((f"v4-{link}-icmp", ethernet(ipv4(LO4, LO4, 1, icmp), tags=tags)))
    v4 = [
        ("options-sip", ipv4(LO4, LO4, 17, udp(other, s1, b"x"), options=b"\x01" * 4)),
        ("options-other", ipv4(LO4, LO4, 17, udp(other, other, b"x"), options=b"\x01" * 8)),
        ("first-fragment-sip", ipv4(LO4, LO4, 17, udp(other, s1, b"x" * 16), more=True)),
        ("first-fragment-other", ipv4(LO4, LO4, 17, udp(other, other, b"x" * 16), more=True)),
        ("later-fragment-udp", ipv4(LO4, LO4, 17, b"y" * 16, offset=1480, more=True)),
        ("last-fragment-tcp", ipv4(LO4, LO4, 6, b"y" * 16, offset=2960)),
        ("later-fragment-icmp", ipv4(LO4, LO4, 1, b"y" * 16, offset=1480)),
        ("far-fragment-udp", ipv4(LO4, LO4, 17, b"y" * 16, offset=0x1000 * 8)),
        ("dont-fragment-sip", dont_fragment(ipv4(LO4, LO4, 17, udp(other, s1, b"x")))),
        ("dont-fragment-other", dont_fragment(ipv4(LO4, LO4, 17, udp(other, other, b"x")))),
    ]
    out += [(f"v4-{name}", ethernet(packet)) for name, packet in v4]
    v6 = [
        ("hop-by-hop", ipv6(LO6, LO6, 0, b"\x11\x00" + b"\x01\x04" + bytes(4) + udp(1, 2, b""))),
        ("fragment", ipv6(LO6, LO6, 44, ipv6_fragment(17, 0, True, 9, udp(other, other, b"")))),
        ("destination-options", ipv6(LO6, LO6, 60, bytes(8) + udp(other, other, b""))),
        ("icmpv6", ipv6(LO6, LO6, 58, icmp)),
        ("esp", ipv6(LO6, LO6, 50, bytes(16))),
        ("no-next-header", ipv6(LO6, LO6, 59, b"")),
    ]
    out += [(f"v6-{name}", ethernet(packet, 0x86DD)) for name, packet in v6]
    double = ethernet(ipv4(LO4, LO4, 17, udp(other, s1, b"x")), tags=[(0x88A8, 5), (0x8100, 7)])
    arp = ethernet(bytes.fromhex("0001080006040001") + bytes(20), 0x0806)
    out += [
        ("qinq-sip", double),
        ("arp", arp),
        ("v4-header-only", ethernet(ipv4(LO4, LO4, 17, udp(other, s1, b"")))[:34]),
        ("v4-source-port-only", ethernet(ipv4(LO4, LO4, 17, udp(s1, other, b"")))[:36]),
        ("ethernet-only", ethernet(b"", 0x0800)),
        ("runt", b"\x00" * 10),
    ]
    return out


SIP = {5060, 5080}
MEDIA = {40000, 40002, 40003, 40004, 41000}


def test_crafted_frames_cover_both_outcomes() -> None:
    decisions = Counter(reference(frame, SIP, MEDIA) for _, frame in crafted_frames(SIP, MEDIA))
    assert decisions[True] > 40 and decisions[False] > 40


def test_program_matches_the_reference_on_crafted_frames() -> None:
    program = build_filter(SIP, MEDIA)
    for name, frame in crafted_frames(SIP, MEDIA):
        verdict = run_cbpf(program.instructions, frame)
        assert verdict in (0, SNAPLEN), name
        assert bool(verdict) == reference(frame, SIP, MEDIA), name


# --- layout -----------------------------------------------------------------------------------


def check_layout(program: FilterProgram) -> None:
    insns = program.instructions
    assert 0 < len(insns) <= MAX_INSTRUCTIONS
    assert insns[-1][0] == RET_K
    for index, (code, jt, jf, k) in enumerate(insns):
        if code & 0x07 == 0x05:  # every jump lands inside the program, forward
            targets = [k] if code == JA else [jt, jf]
            assert all(t >= 0 and index + 1 + t < len(insns) for t in targets)
            assert code == JA or (jt <= 255 and jf <= 255)
    assert len(program.pack()) == 8 * len(insns)


def test_layout_stays_within_cbpf_limits_up_to_the_capacity() -> None:
    sip = {5060}
    fitted = 0
    # every second port, so none merge into ranges: the worst case for the layout
    for count in (1, 10, 200, 900, 990, 1000, 1010, 1100):
        program = build_filter(sip, range(20000, 20000 + 2 * count, 2))
        check_layout(program)
        if not program.all_udp:
            fitted = count
    assert 990 <= fitted < 1100


def test_beyond_capacity_all_udp_passes_and_tcp_stays_filtered() -> None:
    media = set(range(20000, 30000, 2))
    program = build_filter({5060}, media, snaplen=1500)
    assert program.all_udp and program.media_ports == media
    check_layout(program)
    run = program.instructions
    assert run_cbpf(run, ethernet(ipv4(LO4, LO4, 17, udp(1, 2, b"")))) == 1500
    assert run_cbpf(run, ethernet(ipv6(LO6, LO6, 17, udp(1, 2, b"")), 0x86DD)) == 1500
    assert run_cbpf(run, ethernet(ipv4(LO4, LO4, 6, tcp(1, 5060)))) == 1500
    assert run_cbpf(run, ethernet(ipv4(LO4, LO4, 6, tcp(1, 20000)))) == 0


def test_consecutive_ports_cost_one_range() -> None:
    program = build_filter({5060, 5061, 5062}, range(10000, 30001))
    assert not program.all_udp and len(program.instructions) < 120
    frame = ethernet(ipv4(LO4, LO4, 17, udp(1, 30000, b"")))
    assert run_cbpf(program.instructions, frame) == SNAPLEN
    assert run_cbpf(program.instructions, ethernet(ipv4(LO4, LO4, 17, udp(1, 30001, b"")))) == 0


@pytest.mark.parametrize(
    ("sip", "media", "snaplen"),
    [
        (set(), set(), 100),
        ({0}, set(), 100),
        ({5060}, {65536}, 100),
        ({5060}, {-1}, 100),
        ({"5060"}, set(), 100),
        ({5060}, set(), 0),
    ],
)
def test_bad_arguments_are_refused(sip: set, media: set, snaplen: int) -> None:
    with pytest.raises(ValueError, match=r"port|snaplen"):
        build_filter(sip, media, snaplen=snaplen)


# --- property: the program agrees with the reference on any frame ------------------------------

ports = st.integers(1, 65535)


@st.composite
def frames_and_ports(draw: st.DrawFn) -> tuple[bytes, set[int], set[int]]:
    sip = draw(st.sets(ports, min_size=1, max_size=4))
    media = draw(st.sets(ports, max_size=30))
    if draw(st.booleans()) and media:
        low = min(media)
        media |= set(range(low, min(low + draw(st.integers(1, 6)), 65536)))
    port = st.one_of(st.sampled_from(sorted(sip | media)), ports)
    family = draw(st.sampled_from([4, 6, 0]))
    proto = draw(st.sampled_from([17, 17, 6, 1, 58]))
    segment = struct.pack("!HH", draw(port), draw(port)) + draw(st.binary(max_size=20))
    if family == 4:
        options = b"\x01" * draw(st.sampled_from([0, 4, 8, 40]))
        offset = draw(st.sampled_from([0, 0, 8, 1480, 0x1000 * 8, 0x1FFF * 8]))
        packet = ipv4(LO4, LO4, proto, segment, options=options, offset=offset)
        if draw(st.booleans()):
            packet = dont_fragment(packet)
        ethertype = 0x0800
    elif family == 6:
        proto = draw(st.sampled_from([17, 6, 58, 50, *IPV6_EXTENSIONS]))
        packet, ethertype = ipv6(LO6, LO6, proto, segment), 0x86DD
    else:
        packet, ethertype = draw(st.binary(max_size=60)), draw(st.sampled_from([0x0806, 0x8847]))
    tags = draw(st.lists(st.tuples(st.sampled_from(TPIDS), st.integers(0, 4095)), max_size=2))
    frame = ethernet(packet, ethertype, tags=tags)
    if draw(st.booleans()):
        frame = frame[: draw(st.integers(0, len(frame)))]
    return frame, sip, media


@settings(max_examples=400, deadline=None)
@given(frames_and_ports(), st.integers(64, 65535))
def test_program_agrees_with_the_reference(case, snaplen) -> None:
    frame, sip, media = case
    verdict = run_cbpf(build_filter(sip, media, snaplen=snaplen).instructions, frame)
    assert verdict == (snaplen if reference(frame, sip, media) else 0)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=120), st.sampled_from([0x0800, 0x86DD, 0x8100, 0x9100]))
def test_random_bytes_behind_an_ip_ethertype(body, ethertype) -> None:
    frame = bytes(12) + struct.pack("!H", ethertype) + body
    verdict = run_cbpf(build_filter(SIP, MEDIA).instructions, frame)
    assert bool(verdict) == reference(frame, SIP, MEDIA)


# --- libpcap as an independent compiler -------------------------------------------------------


def libpcap_expression(sip: set[int], media: set[int]) -> str:
    """The filter's policy in libpcap's language."""
    sip_ports = " or ".join(f"port {p}" for p in sorted(sip))
    media_ports = " or ".join(f"port {p}" for p in sorted(media))
    later_fragment = "(ip and ip[6:2] & 0x1fff != 0 and (ip[9] = 6 or ip[9] = 17))"
    extension = "(ip6 and (" + " or ".join(f"ip6[6] = {nh}" for nh in IPV6_EXTENSIONS) + "))"
    base = (
        f"(((udp or tcp) and ({sip_ports})) or (udp and ({media_ports})) "
        f"or {later_fragment} or {extension})"
    )
    return f"{base} or (vlan and {base})"


@pytest.fixture(scope="module")
def libpcap_program(tmp_path_factory: pytest.TempPathFactory) -> FilterProgram:
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        pytest.skip("tcpdump is not installed: it compiles the libpcap reference filter")
    # compiled against an (empty) Ethernet capture file: no live-interface VLAN shortcuts
    empty = write_pcap(tmp_path_factory.mktemp("libpcap") / "empty.pcap", [])
    result = subprocess.run(
        [tcpdump, "-r", str(empty), "-ddd", libpcap_expression(SIP, MEDIA)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.split("\n")
    count = int(lines[0])
    insns = tuple(tuple(int(v) for v in line.split()) for line in lines[1 : 1 + count])
    return FilterProgram(insns, frozenset(SIP), frozenset(MEDIA), False)


def test_libpcap_decides_the_crafted_frames_alike(libpcap_program: FilterProgram) -> None:
    ours = build_filter(SIP, MEDIA)
    frames = crafted_frames(SIP, MEDIA)
    differ = [
        name
        for name, frame in frames
        if bool(run_cbpf(ours.instructions, frame))
        != bool(run_cbpf(libpcap_program.instructions, frame))
    ]
    assert not differ
    assert sum(bool(run_cbpf(ours.instructions, f)) for _, f in frames) > 40


# --- the kernel -------------------------------------------------------------------------------


@pytest.mark.live
def test_kernel_decides_injected_frames_like_libpcap(libpcap_program: FilterProgram) -> None:
    require_packet_sockets()
    ours = capture_socket(build_filter(SIP, MEDIA))
    theirs = capture_socket(libpcap_program)
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sender.bind(("lo", 0))
    marker = os.urandom(2)
    frames = {}
    try:
        for index, (name, frame) in enumerate(crafted_frames(SIP, MEDIA)):
            if len(frame) < 14:
                continue  # lo refuses frames shorter than its header
            # the source MAC identifies the frame, whatever the kernel does with its tags
            mac = b"\x02" + marker + struct.pack("!H", index) + b"\x00"
            frame = frame[:6] + mac + frame[12:]
            frames[mac] = (name, frame)
            sender.send(frame)
        arrived = {}
        for sock in (ours, theirs):
            names = [frames[f[6:12]][0] for f in drain(sock) if f[6:12] in frames]
            assert len(names) == len(set(names)), "a frame arrived twice"
            arrived[sock] = set(names)
    finally:
        for sock in (ours, theirs, sender):
            sock.close()
    expected = {n for n, f in frames.values() if reference(kernel_view(f), SIP, MEDIA)}
    assert arrived[ours] == expected
    assert arrived[theirs] == expected
    # a 0x9100 tag stays in the frame (the offset-18 path runs); a QinQ frame loses its outer one
    assert {"v4-0x9100-udp-to-sip", "v6-0x9100-tcp-to-sip", "qinq-sip"} <= expected


def _port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


@pytest.mark.live
@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_kernel_passes_exactly_the_sip_and_media_traffic(family: int) -> None:
    require_packet_sockets()
    pool = PortPool()
    udp_sip, udp_media, udp_a, udp_b = (pool.bind(family, socket.SOCK_DGRAM) for _ in range(4))
    tcp_sip, tcp_media, tcp_other = (pool.bind(family, socket.SOCK_STREAM) for _ in range(3))
    program = build_filter({_port(udp_sip), _port(tcp_sip)}, {_port(udp_media), _port(tcp_media)})
    sock = capture_socket(program)
    host = "127.0.0.1" if family == socket.AF_INET else "::1"
    v = 4 if family == socket.AF_INET else 6
    expected_udp: Counter[tuple[Flow, bytes]] = Counter()
    try:
        datagrams = [  # (from, to, passes)
            (udp_a, udp_sip, True),
            (udp_sip, udp_b, True),
            (udp_a, udp_media, True),
            (udp_media, udp_b, True),
            (udp_a, udp_b, False),
            (udp_b, udp_a, False),
        ]
        for index, (src, dst, passes) in enumerate(datagrams * 3):
            payload = f"datagram {index}".encode()
            src.sendto(payload, (host, _port(dst)))
            if passes:
                expected_udp[Flow(v, 17, _port(src), _port(dst)), payload] += 1
        accepted_tcp = set()
        for server, passes in ((tcp_sip, True), (tcp_media, False), (tcp_other, False)):
            server.listen(1)
            client = pool.bind(family, socket.SOCK_STREAM)
            ends = (_port(client), _port(server))
            client.connect((host, ends[1]))
            conn, _ = server.accept()
            client.sendall(b"REGISTER over TCP")
            assert conn.recv(100) == b"REGISTER over TCP"
            conn.sendall(b"SIP/2.0 200 OK")
            assert client.recv(100) == b"SIP/2.0 200 OK"
            conn.close()
            client.close()
            if passes:
                accepted_tcp = {ends, ends[::-1]}
        frames = drain(sock)
        assert kernel_drops(sock) == 0
    finally:
        sock.close()
        pool.close()
    seen_udp: Counter[tuple[Flow, bytes]] = Counter()
    seen_tcp: set[tuple[int, int]] = set()
    tcp_data = b""
    for frame in frames:
        parsed = flow_of(frame)
        assert parsed is not None, f"a frame outside UDP/TCP passed: {frame[:60].hex()}"
        flow, payload = parsed
        assert flow.family == v
        if flow.proto == 17:
            seen_udp[flow, payload] += 1
        else:
            seen_tcp.add((flow.sport, flow.dport))
            tcp_data += payload
    assert seen_udp == expected_udp  # each passing datagram exactly once, nothing else
    assert seen_tcp == accepted_tcp
    assert b"REGISTER over TCP" in tcp_data and b"SIP/2.0 200 OK" in tcp_data


@pytest.mark.live
def test_filter_swap_while_traffic_flows() -> None:
    require_packet_sockets()
    pool = PortPool()
    sip, port_a, port_b, sender = (pool.bind(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4))
    a, b = _port(port_a), _port(port_b)
    first, second = build_filter({_port(sip)}, {a}), build_filter({_port(sip)}, {b})
    sock = capture_socket(first)
    rounds = 4000
    done = threading.Event()

    def send() -> None:
        # one CPU: the kernel then filters the datagrams in the order they were sent
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        for i in range(rounds):
            sender.sendto(struct.pack("!I", 2 * i), ("127.0.0.1", a))
            sender.sendto(struct.pack("!I", 2 * i + 1), ("127.0.0.1", b))
        done.set()

    thread = threading.Thread(target=send)
    try:
        thread.start()
        sock.settimeout(5)
        before_swap = []
        while len(before_swap) < 300:
            parsed = flow_of(sock.recv(65536))
            if parsed is not None:
                before_swap.append(struct.unpack("!I", parsed[1])[0])
        attach(sock, second)
        swapped_while_sending = not done.is_set()
        thread.join()
        frames = drain(sock)
        assert kernel_drops(sock) == 0
    finally:
        thread.join()
        sock.close()
        pool.close()
    assert swapped_while_sending
    assert before_swap == list(range(0, 600, 2))
    after = [struct.unpack("!I", payload)[0] for _, payload in filter(None, map(flow_of, frames))]
    # numbers: even to port a (passes the first filter), odd to port b (passes the second)
    evens = before_swap + [n for n in after if n % 2 == 0]
    odds = [n for n in after if n % 2 == 1]
    assert odds, "nothing passed the second filter"
    assert evens == list(range(0, evens[-1] + 1, 2)), "port a lost datagrams before the swap"
    assert odds == list(range(odds[0], 2 * rounds, 2)), "port b lost datagrams after the swap"
    # one moment splits the stream: everything sent before it met the first filter only,
    # everything after it the second only (the datagrams in the gap were each rejected by
    # the filter they met)
    assert max(evens[-1], odds[0] - 2) < min(evens[-1] + 2, odds[0])


@pytest.mark.live
def test_a_program_at_the_size_limit_runs_in_the_kernel() -> None:
    require_packet_sockets()
    pool = PortPool()
    sip, target, sender = (pool.bind(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3))
    # the target port comes last in about the longest list of separate ports that still fits
    media = {_port(target) - 2 * i for i in range(990)} - {_port(sip), _port(sender)}
    program = build_filter({_port(sip)}, media)
    assert not program.all_udp and len(program.instructions) > 3900
    sock = capture_socket(program)
    try:
        sender.sendto(b"last port in the list", ("127.0.0.1", _port(target)))
        sender.sendto(b"not listed", ("127.0.0.1", _port(sender)))
        frames = drain(sock)
    finally:
        sock.close()
        pool.close()
    payloads = [parsed[1] for parsed in map(flow_of, frames) if parsed is not None]
    assert payloads == [b"last port in the list"]
