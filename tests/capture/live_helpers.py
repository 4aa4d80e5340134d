"""Live-test helpers: packet sockets on ``lo``, free ports, a frame's flow, and SIPp's audio."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.capture.bpf import FilterProgram, attach

SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
SO_RCVBUFFORCE = 33
HERE = Path(__file__).parent


def require_packet_sockets() -> None:
    """Skip, saying why, unless this process may open AF_PACKET sockets."""
    if not hasattr(socket, "AF_PACKET"):
        pytest.skip("AF_PACKET sockets exist on Linux only")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except PermissionError:
        pytest.skip("live capture needs CAP_NET_RAW: run the live tests as root")


@contextmanager
def veth_pair(prefix: str, *, up: bool, ipv6: bool) -> Iterator[tuple[str, str]]:
    """A veth pair (near end, far end) named from ``prefix``, deleted afterwards; skips, saying
    why, where packet sockets or veth pairs cannot be had."""
    require_packet_sockets()
    ip = shutil.which("ip")
    if ip is None:
        pytest.skip("iproute2 is not installed")
    tag = time.monotonic_ns() % 100000
    near, far = f"{prefix}n{tag}", f"{prefix}f{tag}"
    made = subprocess.run(
        [ip, "link", "add", near, "type", "veth", "peer", "name", far], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot create a veth pair here: {made.stderr.decode().strip()}")
    try:
        for name in (near, far):
            switch = Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6")
            if not ipv6 and switch.exists():
                switch.write_text("1")
            if up:
                subprocess.run([ip, "link", "set", name, "up"], check=True)
        yield near, far
    finally:
        subprocess.run([ip, "link", "del", near], check=False)


def capture_socket(program: FilterProgram) -> socket.socket:
    """A plain AF_PACKET socket on lo with ``program`` attached before it is bound."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    attach(sock, program)
    sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
    sock.bind(("lo", ETH_P_ALL))
    return sock


def drain(sock: socket.socket, quiet: float = 0.3) -> list[bytes]:
    """Every frame queued on ``sock`` until none has come for ``quiet`` seconds."""
    sock.settimeout(quiet)
    frames = []
    while True:
        try:
            frames.append(sock.recv(65536))
        except TimeoutError:
            return frames


def kernel_drops(sock: socket.socket) -> int:
    return struct.unpack("II", sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]


@dataclass(frozen=True, slots=True)
class Flow:
    family: int  # 4 or 6
    proto: int
    sport: int
    dport: int


def flow_of(frame: bytes) -> tuple[Flow, bytes] | None:
    """The flow and transport payload of an untagged Ethernet/IP/UDP-or-TCP frame."""
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype == 0x0800:
        family, proto, start = 4, frame[23], 14 + (frame[14] & 0x0F) * 4
    elif ethertype == 0x86DD:
        family, proto, start = 6, frame[20], 54
    else:
        return None
    if proto not in (6, 17):
        return None
    sport, dport = struct.unpack_from("!HH", frame, start)
    header = 8 if proto == 17 else (frame[start + 12] >> 4) * 4
    return Flow(family, proto, sport, dport), frame[start + header :]


class PortPool:
    """Sockets bound to distinct free ports: no number is handed out twice, whatever the
    protocol, so a port chosen as "rejected" can never collide with an accepted one."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self._used: set[int] = set()

    def bind(self, family: int, kind: int) -> socket.socket:
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
        while True:
            sock = socket.socket(family, kind)
            sock.bind((host, 0))
            port = sock.getsockname()[1]
            if port not in self._used:
                self._used.add(port)
                self.sockets.append(sock)
                return sock
            sock.close()

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def free_udp_ports(count: int) -> list[int]:
    """Distinct ports free right now (for programs that bind them themselves)."""
    pool = PortPool()
    ports = [pool.bind(socket.AF_INET, socket.SOCK_DGRAM).getsockname()[1] for _ in range(count)]
    pool.close()
    return ports


def sipp_audio() -> Path:
    """SIPp's own G.711 A-law capture, as packaged (Debian: sip-tester)."""
    dpkg = shutil.which("dpkg")
    if dpkg is not None:
        listing = subprocess.run([dpkg, "-L", "sip-tester"], capture_output=True, text=True)
        for line in listing.stdout.splitlines():
            if line.endswith("/g711a.pcap"):
                return Path(line)
    pytest.skip("SIPp's g711a.pcap was not found (install the sip-tester package)")
