"""Kernel packet filter (classic BPF) for the capture socket: SIP and the media worth reading.

The program accepts, on Ethernet with or without one VLAN tag, over IPv4 or IPv6:

- UDP or TCP whose source or destination port is a SIP port;
- UDP whose source or destination port is a media port (the RTP ports of the calls being
  analysed or recorded: the rest of the mirror port's RTP never leaves the kernel);
- IPv4 fragments after the first of UDP or TCP datagrams (they carry no ports, and the first
  fragment alone cannot be reassembled), and IPv6 packets whose next header is an extension
  header, not directly UDP or TCP (ports are not at a fixed offset there).

Everything else (ARP, ICMP, other protocols, other ports) is rejected in the kernel. Accepted
packets are truncated to ``snaplen`` bytes.

cBPF jumps only forward, with 8-bit conditional offsets, and a program holds at most 4096
instructions. Port lists are laid out as compare-and-return pairs, so no conditional jump
spans more than three instructions; the blocks are reached with unconditional jumps, whose
offsets are 32-bit. Consecutive ports are merged into ranges. When the media ports do not fit,
the program accepts every UDP packet instead and says so in ``FilterProgram.all_udp``, so that
userspace knows it must drop unwanted media itself, as early as it can.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.capture.linklayer import ETHERTYPE_IPV4, ETHERTYPE_IPV6, VLAN_TPIDS

MAX_INSTRUCTIONS = 4096  # BPF_MAXINSNS
SO_ATTACH_FILTER = 26

# Opcodes: class | size | mode (loads), class | operation | source (ALU, jumps).
LDH_ABS = 0x28  # A = u16 at [k]
LDB_ABS = 0x30  # A = u8 at [k]
LDH_IND = 0x48  # A = u16 at [X + k]
LDX_IMM = 0x01  # X = k
LDX_MSH = 0xB1  # X = 4 * (u8 at [k] & 0x0f): the IPv4 header length
ADD_K = 0x04  # A += k
TAX = 0x07  # X = A
TXA = 0x87  # A = X
JA = 0x05  # jump k forward (32-bit offset)
JEQ_K = 0x15
JGT_K = 0x25
JGE_K = 0x35
JSET_K = 0x45
RET_K = 0x06

PROTO_TCP = 6
PROTO_UDP = 17
# The next-header values after which an IPv6 packet's ports are not at offset 40: hop-by-hop,
# routing, fragment, destination options, AH, mobility, HIP, shim6, experimental (RFC 7045).
IPV6_EXTENSION_HEADERS = (0, 43, 44, 60, 51, 135, 139, 140, 253, 254)

_INSN = struct.Struct("=HBBI")
_SHORT_JUMP = 255

Instruction = tuple[int, int, int, int]  # code, jt, jf, k: struct sock_filter


@dataclass(frozen=True, slots=True)
class FilterProgram:
    """A classic BPF program and what it lets through.

    ``all_udp`` is set when the media ports did not fit in one program and every UDP packet is
    accepted instead; ``media_ports`` are then the ports userspace should keep.
    """

    instructions: tuple[Instruction, ...]
    sip_ports: frozenset[int]
    media_ports: frozenset[int]
    all_udp: bool

    def pack(self) -> bytes:
        """The program as the kernel's ``struct sock_filter`` array (native byte order)."""
        return b"".join(_INSN.pack(*insn) for insn in self.instructions)


def build_filter(
    sip_ports: Iterable[int], media_ports: Iterable[int] = (), *, snaplen: int = 65535
) -> FilterProgram:
    """The program that keeps SIP on ``sip_ports`` and UDP media on ``media_ports``."""
    sip = _checked_ports(sip_ports, "SIP")
    if not sip:
        raise ValueError("no SIP port given: pass at least one, e.g. {5060}")
    media = _checked_ports(media_ports, "media")
    if not 1 <= snaplen <= 0xFFFFFFFF:
        raise ValueError(f"snaplen {snaplen} is out of range; use a byte count from 1 up")
    instructions = _assemble(_program(sip, sip | media, snaplen))
    all_udp = len(instructions) > MAX_INSTRUCTIONS
    if all_udp:
        instructions = _assemble(_program(sip, None, snaplen))
        if len(instructions) > MAX_INSTRUCTIONS:
            raise ValueError(
                f"{len(sip)} SIP ports in {len(_ranges(sip))} separate ranges do not fit in one "
                f"kernel filter; list at most a few hundred, preferably consecutive"
            )
    return FilterProgram(instructions, sip, media, all_udp)


def pass_all(sip_ports: Iterable[int], *, snaplen: int = 65535) -> FilterProgram:
    """A program that keeps every frame (up to ``snaplen``).

    For tunnelled mirror feeds (VXLAN, GRE, ERSPAN), whose inner ports a classic filter cannot
    see: userspace then drops the media of unsampled calls before parsing it.
    """
    return FilterProgram(
        ((RET_K, 0, 0, snaplen),), _checked_ports(sip_ports, "SIP"), frozenset(), True
    )


def attach(sock: socket.socket, program: FilterProgram) -> None:
    """Attach ``program`` to ``sock``, replacing its filter in one step.

    The kernel swaps the old filter for the new one atomically: every packet is judged by
    exactly one of the two, never by none.
    """
    code = ctypes.create_string_buffer(program.pack())  # the kernel copies it during the call
    fprog = struct.pack("HP", len(program.instructions), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _checked_ports(ports: Iterable[int], what: str) -> frozenset[int]:
    checked = frozenset(ports)
    bad = sorted(p for p in checked if not (isinstance(p, int) and 1 <= p <= 65535))
    if bad:
        raise ValueError(f"{what} ports must be integers from 1 to 65535, got {bad[:5]}")
    return checked


def _ranges(ports: frozenset[int]) -> list[tuple[int, int]]:
    """Sorted ports as inclusive ranges of consecutive values."""
    out: list[tuple[int, int]] = []
    for port in sorted(ports):
        if out and out[-1][1] == port - 1:
            out[-1] = (out[-1][0], port)
        else:
            out.append((port, port))
    return out


# A program is written as a list of items: an instruction whose jump targets may be label names
# (str) or plain offsets (int), or a label (a bare str) marking the next instruction.
_Item = str | tuple[int, int | str, int | str, int | str]


def _program(sip: frozenset[int], udp_ports: frozenset[int] | None, snaplen: int) -> list[_Item]:
    """``udp_ports`` None accepts every UDP packet."""
    out: list[_Item] = [(LDH_ABS, 0, 0, 12)]
    out += [(JEQ_K, "ip4_14", 0, ETHERTYPE_IPV4), (JEQ_K, "ip6_14", 0, ETHERTYPE_IPV6)]
    out += [(JEQ_K, "vlan", 0, tpid) for tpid in sorted(VLAN_TPIDS)]
    out += [(RET_K, 0, 0, 0), "vlan", (LDH_ABS, 0, 0, 16)]
    out += [(JEQ_K, "ip4_18", 0, ETHERTYPE_IPV4), (JEQ_K, "ip6_18", 0, ETHERTYPE_IPV6)]
    out.append((RET_K, 0, 0, 0))
    for link in (14, 18):
        out += _ipv4(link, snaplen)
        out += _ipv6(link, snaplen)
    out += ["tcp", *_ports(sip, snaplen)]
    out.append("udp")
    out += [(RET_K, 0, 0, snaplen)] if udp_ports is None else _ports(udp_ports, snaplen)
    return out


def _ipv4(link: int, snaplen: int) -> list[_Item]:
    """IPv4 at offset ``link``: on to the port blocks with X at the transport header."""
    return [
        f"ip4_{link}",
        (LDB_ABS, 0, 0, link + 9),
        (JEQ_K, 2, 0, PROTO_UDP),
        (JEQ_K, 1, 0, PROTO_TCP),
        (RET_K, 0, 0, 0),
        (LDH_ABS, 0, 0, link + 6),
        (JSET_K, 0, 1, 0x1FFF),  # a fragment offset: not the first fragment, no ports
        (RET_K, 0, 0, snaplen),
        (LDX_MSH, 0, 0, link),
        (TXA, 0, 0, 0),
        (ADD_K, 0, 0, link),
        (TAX, 0, 0, 0),
        (LDB_ABS, 0, 0, link + 9),
        (JEQ_K, 0, 1, PROTO_TCP),
        (JA, 0, 0, "tcp"),
        (JA, 0, 0, "udp"),
    ]


def _ipv6(link: int, snaplen: int) -> list[_Item]:
    """IPv6 at offset ``link``: ports right after the fixed header, or accept (extensions)."""
    out: list[_Item] = [
        f"ip6_{link}",
        (LDB_ABS, 0, 0, link + 6),
        (JEQ_K, f"udp6_{link}", 0, PROTO_UDP),
        (JEQ_K, f"tcp6_{link}", 0, PROTO_TCP),
    ]
    out += [(JEQ_K, f"ext6_{link}", 0, nh) for nh in IPV6_EXTENSION_HEADERS]
    out += [(RET_K, 0, 0, 0), f"ext6_{link}", (RET_K, 0, 0, snaplen)]
    out += [f"udp6_{link}", (LDX_IMM, 0, 0, link + 40), (JA, 0, 0, "udp")]
    out += [f"tcp6_{link}", (LDX_IMM, 0, 0, link + 40), (JA, 0, 0, "tcp")]
    return out


def _ports(ports: frozenset[int], snaplen: int) -> list[_Item]:
    """With X at the transport header: accept if either port is in ``ports``, else reject."""
    compares: list[_Item] = []
    for lo, hi in _ranges(ports):
        if lo == hi:
            compares += [(JEQ_K, 0, 1, lo), (RET_K, 0, 0, snaplen)]
        else:
            compares += [(JGE_K, 0, 2, lo), (JGT_K, 1, 0, hi), (RET_K, 0, 0, snaplen)]
    return [(LDH_IND, 0, 0, 0), *compares, (LDH_IND, 0, 0, 2), *compares, (RET_K, 0, 0, 0)]


def _assemble(items: list[_Item]) -> tuple[Instruction, ...]:
    labels: dict[str, int] = {}
    position = 0
    for item in items:
        if isinstance(item, str):
            labels[item] = position
        else:
            position += 1
    out: list[Instruction] = []
    for item in items:
        if isinstance(item, str):
            continue
        here = len(out) + 1  # offsets count from the next instruction
        code, jt, jf, k = (labels[v] - here if isinstance(v, str) else v for v in item)
        # The layout keeps every conditional jump short; a violation is a bug in this module.
        assert code == JA or (0 <= jt <= _SHORT_JUMP and 0 <= jf <= _SHORT_JUMP)
        out.append((code, jt, jf, k))
    return tuple(out)
