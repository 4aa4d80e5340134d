"""Live capture from a network interface: an AF_PACKET socket, a kernel filter and an mmap ring.

The socket is opened with protocol 0 (it receives nothing yet), gets its filter, its ring and
``PACKET_IGNORE_OUTGOING`` (so loopback does not show each packet twice), and only then is
bound to the interface: no packet ever reaches it unfiltered. Frames arrive through a
TPACKET_V3 ring shared with the kernel, which hands over whole blocks of frames with their
kernel timestamps and costs no system call per frame: on ``lo`` it drained about three times as
many frames per second as ``recvfrom``, and its capture times stay right when the reader falls
behind.

Iterating a ``LiveSource`` yields ``Frame``s, and ``None`` whenever ``idle_timeout`` seconds
pass without one, so that the caller can run its timers on a quiet line. ``stop()`` (safe from
any thread or a signal handler) ends the iteration within one block of frames; ``close()``
releases the socket and ring from the iterating thread, after the iteration is over.

VLAN tags that the kernel or the card strips on receive are not put back into the frames; the
packet layer does not need them.
"""

from __future__ import annotations

import errno
import mmap
import os
import select
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gateway.capture.bpf import FilterProgram, attach, build_filter, pass_all
from gateway.capture.pcapfile import LINKTYPE_ETHERNET, Frame
from gateway.closing import Closing

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_RX_RING = 5
PACKET_STATISTICS = 6
PACKET_VERSION = 10
PACKET_IGNORE_OUTGOING = 23
TPACKET_V3 = 2
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
# Interface types whose frames start with an Ethernet header (lo has one too).
_ETHERNET_ARPHRD = {1: "Ethernet", 772: "loopback"}

SYS_CLASS_NET = Path("/sys/class/net")
_MAX_BLOCK = 1 << 20
_MIN_BLOCK = 1 << 17  # holds the largest snapshot (64 KiB) with its headers
_MIN_BLOCKS = 8
_FRAME_SIZE = 2048  # only checked by the kernel for TPACKET_V3; frames are packed in blocks
# A block that is not full is handed over after this long: the latency on a quiet line, and,
# times the number of blocks, how long the reader may stall before a trickle of frames is lost.
_BLOCK_TIMEOUT_MS = 50

_TPACKET_REQ3 = struct.Struct("=7I")
_STATUS = struct.Struct("=I")
_BLOCK = struct.Struct("=II")  # num_pkts, offset_to_first_pkt, at offset 12 of a block
# tpacket3_hdr: tp_next_offset, tp_sec, tp_nsec, tp_snaplen, tp_len, tp_status, tp_mac
_PACKET = struct.Struct("=IIIIIIH")
_STATS_V3 = struct.Struct("=III")  # tp_packets (includes drops), tp_drops, tp_freeze_q_cnt


class LiveCaptureError(Exception):
    """The capture cannot start or continue; the message says what to change."""


@dataclass(slots=True)
class CaptureStatistics:
    """Kernel counts since the source opened.

    ``received`` frames passed the filter; ``dropped`` of them were lost because the ring was
    full (the reader fell behind); ``ring_freezes`` counts the times the ring filled up.
    """

    received: int = 0
    dropped: int = 0
    ring_freezes: int = 0


def interfaces() -> list[str]:
    """The network interfaces of this machine, by name."""
    try:
        return sorted(entry.name for entry in SYS_CLASS_NET.iterdir())
    except OSError:
        return []


class LiveSource(Closing):
    """Frames from ``interface`` that carry SIP (on ``sip_ports``) or wanted media.

    ``buffer_bytes`` is the size of the ring shared with the kernel; ``snaplen`` caps the bytes
    kept of each frame. ``update_media_ports`` replaces the media ports the kernel lets
    through (unless ``kernel_filter`` is off, for tunnelled feeds: then every frame passes):
    new ports at once, removals at most once per ``min_filter_interval`` seconds (later
    updates within that time are merged into one swap). ``counters`` counts swaps and socket
    errors; ``statistics()`` the kernel's drops.
    """

    def __init__(
        self,
        interface: str,
        *,
        sip_ports: Iterable[int],
        media_ports: Iterable[int] = (),
        snaplen: int = 2048,
        buffer_bytes: int = 32 << 20,
        idle_timeout: float = 0.5,
        min_filter_interval: float = 0.2,
        promiscuous: bool = True,
        kernel_filter: bool = True,
    ) -> None:
        self.interface = interface
        self.counters: Counter[str] = Counter()
        self._snaplen = snaplen
        self._idle_timeout = idle_timeout
        self._min_interval = min_filter_interval
        self._filtering = kernel_filter
        self._program = (
            build_filter(sip_ports, media_ports, snaplen=snaplen)
            if kernel_filter
            else pass_all(sip_ports, snaplen=snaplen)
        )
        self._wanted = self._program.media_ports
        self._last_swap = time.monotonic()
        self._lock = threading.Lock()
        self._stats = CaptureStatistics()
        self._stopping = False
        self._block = 0
        ifindex = _check_interface(interface)
        self._block_size, self._block_count = _ring_geometry(buffer_bytes)
        self._sock = _open_socket(interface)
        wakeup, ring = -1, None
        try:
            wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            attach(self._sock, self._program)
            self._sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            ring = self._map_ring()
            if promiscuous:
                # a mirror port delivers frames addressed to other hosts: keep them
                mreq = struct.pack("iHH8s", ifindex, PACKET_MR_PROMISC, 0, b"")
                self._sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, mreq)
            self._sock.bind((interface, ETH_P_ALL))
        except BaseException as exc:
            if ring is not None:
                ring.close()
            if wakeup >= 0:
                os.close(wakeup)
            self._sock.close()
            if isinstance(exc, OSError):
                if exc.errno == errno.ENODEV:  # the interface went away meanwhile
                    raise LiveCaptureError(_no_such_interface(interface)) from exc
                raise LiveCaptureError(f"cannot capture on {interface}: {exc}") from exc
            raise
        self._wakeup = wakeup
        self._ring = ring

    @property
    def program(self) -> FilterProgram:
        """The filter in the kernel now; ``program.all_udp`` means userspace must drop media."""
        return self._program

    def __iter__(self) -> Iterator[Frame | None]:
        return self._frames()

    def stop(self) -> None:
        """End the iteration soon; safe from any thread and from signal handlers."""
        self._stopping = True
        if self._wakeup >= 0:
            os.eventfd_write(self._wakeup, 1)

    def close(self) -> None:
        """Release the ring and the socket (from the iterating thread, once it is done)."""
        self._stopping = True
        if self._sock.fileno() >= 0:
            with self._lock:
                self._accumulate_statistics()
            self._ring.close()
            self._sock.close()
            wakeup, self._wakeup = self._wakeup, -1  # a late stop() must not write to a reused fd
            os.close(wakeup)

    def update_media_ports(self, ports: Iterable[int]) -> None:
        """Let exactly these media ports through the kernel filter (new ones at once, removed
        ones within ``min_filter_interval``)."""
        if not self._filtering:  # every frame passes already
            return
        wanted = frozenset(ports)
        with self._lock:
            self._wanted = wanted
            self._swap_if_due()

    def statistics(self) -> CaptureStatistics:
        """Frames received and dropped by the kernel since the source opened."""
        with self._lock:
            self._accumulate_statistics()
            s = self._stats
            return CaptureStatistics(s.received, s.dropped, s.ring_freezes)

    # -- internals --------------------------------------------------------------------------

    def _map_ring(self) -> mmap.mmap:
        sock = self._sock
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V3)
        size, count = self._block_size, self._block_count
        request = _TPACKET_REQ3.pack(
            size, count, _FRAME_SIZE, size // _FRAME_SIZE * count, _BLOCK_TIMEOUT_MS, 0, 0
        )
        try:
            sock.setsockopt(SOL_PACKET, PACKET_RX_RING, request)
            return mmap.mmap(
                sock.fileno(), size * count, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as exc:
            raise LiveCaptureError(
                f"cannot set up a {size * count >> 20} MiB capture ring on {self.interface} "
                f"({exc.strerror}); lower capture.socket_buffer_mib or free memory"
            ) from exc

    def _frames(self) -> Iterator[Frame | None]:
        ring = self._ring
        status = _STATUS.unpack_from
        block_header = _BLOCK.unpack_from
        packet = _PACKET.unpack_from
        release = _STATUS.pack_into
        size, count = self._block_size, self._block_count
        poller = select.poll()
        poller.register(self._sock, select.POLLIN | select.POLLERR)
        poller.register(self._wakeup, select.POLLIN)
        while not self._stopping:
            base = self._block * size
            if status(ring, base + 8)[0] & TP_STATUS_USER:
                packets, offset = block_header(ring, base + 12)
                offset += base
                for _ in range(packets):
                    next_offset, sec, nsec, caplen, _, _, mac = packet(ring, offset)
                    start = offset + mac
                    yield Frame(sec + nsec * 1e-9, LINKTYPE_ETHERNET, ring[start : start + caplen])
                    offset += next_offset
                release(ring, base + 8, TP_STATUS_KERNEL)
                self._block = (self._block + 1) % count
                if self._wanted is not self._program.media_ports:
                    with self._lock:
                        self._swap_if_due()
                continue
            events = poller.poll(self._poll_timeout_ms())
            for fd, flags in events:
                if fd == self._sock.fileno() and flags & select.POLLERR:
                    # e.g. ENETDOWN when the link drops: the kernel resumes on link up
                    code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    self.counters[f"live.socket_error.{errno.errorcode.get(code, code)}"] += 1
            with self._lock:
                self._swap_if_due()
            if not events:
                yield None

    def _poll_timeout_ms(self) -> int:
        timeout = self._idle_timeout
        if self._wanted is not self._program.media_ports:
            due = self._last_swap + self._min_interval - time.monotonic()
            timeout = min(timeout, max(due, 0.0))
        return max(1, round(timeout * 1000))

    def _swap_if_due(self) -> None:
        """Put the wanted media ports into the kernel if they changed and the interval passed."""
        if not self._filtering or self._wanted == self._program.media_ports:
            self._wanted = self._program.media_ports
            return
        now = time.monotonic()
        # a new call's ports go in at once: its first packets are audio a contract recording
        # must keep; only removals wait, merged, for the interval
        adding = not self._wanted <= self._program.media_ports
        if not adding and now - self._last_swap < self._min_interval:
            return
        program = build_filter(self._program.sip_ports, self._wanted, snaplen=self._snaplen)
        attach(self._sock, program)
        self._program = program
        self._wanted = program.media_ports
        self._last_swap = now
        self.counters["live.filter_swaps"] += 1
        if program.all_udp:
            self.counters["live.filter_all_udp"] += 1

    def _accumulate_statistics(self) -> None:
        if self._sock.fileno() < 0:  # closed: the totals are final
            return
        # the kernel resets its counts on every read
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _STATS_V3.size)
        packets, drops, freezes = _STATS_V3.unpack(raw)
        self._stats.received += packets
        self._stats.dropped += drops
        self._stats.ring_freezes += freezes


def _ring_geometry(buffer_bytes: int) -> tuple[int, int]:
    """Block size and count: blocks of up to 1 MiB, at least eight of them if possible."""
    if buffer_bytes < 2 * _MIN_BLOCK:
        raise LiveCaptureError(
            f"capture buffer of {buffer_bytes} bytes is too small; use at least "
            f"{2 * _MIN_BLOCK >> 10} KiB (capture.socket_buffer_mib = 1 or more)"
        )
    block = _MAX_BLOCK
    while block > _MIN_BLOCK and buffer_bytes // block < _MIN_BLOCKS:
        block //= 2
    return block, buffer_bytes // block


def _check_interface(interface: str) -> int:
    """The interface's index; a clear error if it is missing or does not carry Ethernet."""
    if not interface or "/" in interface or interface in (".", "..") or len(interface) > 15:
        raise LiveCaptureError(_no_such_interface(interface))
    try:
        kind = int((SYS_CLASS_NET / interface / "type").read_text())
    except (OSError, ValueError):
        raise LiveCaptureError(_no_such_interface(interface)) from None
    if kind not in _ETHERNET_ARPHRD:
        raise LiveCaptureError(
            f"interface {interface!r} has link type {kind}, not Ethernet; capture on the "
            f"Ethernet interface wired to the mirror port"
        )
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise LiveCaptureError(_no_such_interface(interface)) from None


def _no_such_interface(interface: str) -> str:
    found = ", ".join(interfaces()) or "none found"
    return (
        f"no network interface named {interface!r} on this machine (interfaces: {found}); "
        f"set capture.interface to the one wired to the mirror port"
    )


def _open_socket(interface: str) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as exc:
        raise LiveCaptureError(
            f"capturing on {interface} needs the CAP_NET_RAW capability, which this process "
            f"lacks: run callveil as root, give its service AmbientCapabilities=CAP_NET_RAW, "
            f"or grant it to the interpreter with `setcap cap_net_raw+ep <python>`"
        ) from exc
