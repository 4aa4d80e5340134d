"""LiveSource on real interfaces: a SIPp call over loopback, filter updates, idle ticks, kernel
drop accounting, a veth pair standing in for a mirror port, and the errors people will meet."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.capture.live import LiveCaptureError, LiveSource, interfaces
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import LINKTYPE_ETHERNET, CaptureReader, Frame
from tests.capture.live_helpers import (
    HERE,
    PortPool,
    free_udp_ports,
    require_packet_sockets,
    sipp_audio,
    veth_pair,
)
from tests.capture.packet_helpers import ethernet, ipv4, udp

FLOOD = """
import socket, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(count):
    s.sendto(i.to_bytes(4, "big"), ("127.0.0.1", port))
"""


def _port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def _collect(frames: Iterator[Frame | None], seconds: float) -> list[Frame]:
    """Frames the iterator yields within ``seconds`` (it must tick while idle)."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        frame = next(frames)
        if frame is not None:
            out.append(frame)
    return out


def _udp_payloads(frames: list[Frame]) -> list[bytes]:
    decoder = PacketDecoder()
    return [d.payload for f in frames for d in decoder.decode(f)]


# --- a real call ------------------------------------------------------------------------------


def _sip_summary(payload: bytes) -> tuple[str, str]:
    """(request method or status code, CSeq method) of a SIP message."""
    head, _, _ = payload.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    first = lines[0].split(" ")
    kind = first[1] if first[0] == "SIP/2.0" else first[0]
    cseq = next(line for line in lines if line.lower().startswith("cseq:"))
    return kind, cseq.split()[-1]


@pytest.mark.live
def test_sipp_call_over_loopback_arrives_exactly_once(tmp_path: Path) -> None:
    require_packet_sockets()
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    audio = sipp_audio()
    (tmp_path / "g711a.pcap").symlink_to(audio)
    with CaptureReader(audio) as reader:
        expected_rtp = Counter(_udp_payloads(list(reader)))
    uas, uac, uas_media, uac_media, rejected_port = free_udp_ports(5)
    rejected = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rejected.bind(("127.0.0.1", rejected_port))
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "20"]
    source = LiveSource(
        "lo", sip_ports={uas, uac}, media_ports={uas_media, uac_media}, idle_timeout=0.2
    )
    frames: list[Frame] = []
    answerer = subprocess.Popen(
        [sipp, "-sn", "uas", "-p", str(uas), "-mp", str(uas_media), *common], **quiet
    )
    caller = None
    try:
        time.sleep(0.5)  # SIPp binds its ports
        scenario = str(HERE / "live_uac_pcma.xml")
        peer = f"127.0.0.1:{uas}"
        caller = subprocess.Popen(
            [sipp, peer, "-sf", scenario, "-p", str(uac), "-mp", str(uac_media), *common], **quiet
        )
        for i in range(5):  # traffic the kernel must keep out, during the call
            rejected.sendto(b"not for us %d" % i, ("127.0.0.1", rejected_port))
        ended = None
        deadline = time.monotonic() + 18
        for frame in source:
            if frame is not None:
                frames.append(frame)
            elif caller.poll() is not None:
                ended = ended or time.monotonic()
                if time.monotonic() - ended > 0.3:
                    break
            assert time.monotonic() < deadline, "the call did not end in time"
        assert caller.wait() == 0, "SIPp's caller failed its scenario"
        stats = source.statistics()
    finally:
        for process in (answerer, caller):  # the answerer lingers 4 s after the BYE by design
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        source.close()
        rejected.close()

    assert stats.dropped == 0 and stats.received == len(frames)
    assert all(f.linktype == LINKTYPE_ETHERNET for f in frames)
    decoder = PacketDecoder()
    sip: Counter[tuple[str, str]] = Counter()
    rtp: Counter[bytes] = Counter()
    for frame in frames:
        (datagram,) = decoder.decode(frame)  # every frame is one whole UDP datagram
        ends = {datagram.sport, datagram.dport}
        if ends == {uas, uac}:
            sip[_sip_summary(datagram.payload)] += 1
        else:
            assert (datagram.sport, datagram.dport) == (uac_media, uas_media)
            rtp[datagram.payload] += 1
    assert sip == {
        ("INVITE", "INVITE"): 1,
        ("180", "INVITE"): 1,
        ("200", "INVITE"): 1,
        ("ACK", "ACK"): 1,
        ("BYE", "BYE"): 1,
        ("200", "BYE"): 1,
    }
    assert rtp == expected_rtp  # every RTP packet of the audio, each exactly once
    timestamps = [f.ts for f in frames]
    assert timestamps == sorted(timestamps) and timestamps[-1] - timestamps[0] > 7


# --- filter updates ---------------------------------------------------------------------------


@pytest.mark.live
def test_media_port_updates_are_swapped_in_and_coalesced() -> None:
    require_packet_sockets()
    pool = PortPool()
    sip, sender, *sinks = (pool.bind(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5))
    x, y, z = (_port(sink) for sink in sinks)

    def send(*ports: int) -> None:
        for port in ports:
            sender.sendto(b"to %d" % port, ("127.0.0.1", port))

    try:
        with LiveSource(
            "lo", sip_ports={_port(sip)}, idle_timeout=0.05, min_filter_interval=0.3
        ) as source:
            frames = iter(source)
            time.sleep(0.3)
            send(x)
            source.update_media_ports({x})  # a new call's port: in at once
            assert source.program.media_ports == {x}
            send(x, y, z)
            first = _collect(frames, 0.15)
            source.update_media_ports({x, y})  # another new port: at once too
            assert source.program.media_ports == {x, y}
            assert source.counters["live.filter_swaps"] == 2
            source.update_media_ports({z, y})  # a removal and an addition: at once
            source.update_media_ports({z})  # only a removal, too soon: it waits
            assert source.program.media_ports == {y, z}
            assert source.counters["live.filter_swaps"] == 3
            _collect(frames, 0.4)  # idle ticks put the pending ports in
            assert source.program.media_ports == {z}
            assert source.counters["live.filter_swaps"] == 4
            send(x, y, z)
            second = _collect(frames, 0.15)
            source.update_media_ports({z})  # unchanged: no swap
            assert source.counters["live.filter_swaps"] == 4
    finally:
        pool.close()
    assert _udp_payloads(first) == [b"to %d" % x]
    assert _udp_payloads(second) == [b"to %d" % z]


# --- ticks, stop, drops -----------------------------------------------------------------------


@pytest.mark.live
def test_idle_ticks_and_stop_from_another_thread() -> None:
    require_packet_sockets()
    (unused,) = free_udp_ports(1)
    with LiveSource("lo", sip_ports={unused}, idle_timeout=0.1) as source:
        timer = threading.Timer(0.55, source.stop)
        started = time.monotonic()
        timer.start()
        ticks = [item for item in source]
        elapsed = time.monotonic() - started
    assert ticks and all(item is None for item in ticks)
    assert 4 <= len(ticks) <= 6
    assert elapsed < 0.65  # stop() wakes the reader at once, not at its next tick


def _flood(port: int, count: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FLOOD, str(port), str(count)])


@pytest.mark.live
def test_every_flooded_datagram_arrives_once() -> None:
    require_packet_sockets()
    pool = PortPool()
    target = pool.bind(socket.AF_INET, socket.SOCK_DGRAM)
    target.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # lets it drop, not us
    count = 20000
    try:
        with LiveSource("lo", sip_ports={_port(target)}, idle_timeout=0.1) as source:
            started = time.time()
            flood = _flood(_port(target), count)
            seen = []
            for frame in source:
                if frame is not None:
                    seen.append(frame)
                elif flood.poll() is not None:
                    break
            stats = source.statistics()
            finished = time.time()
    finally:
        pool.close()
    numbers = [int.from_bytes(p, "big") for p in _udp_payloads(seen)]
    assert numbers == list(range(count))
    assert (stats.received, stats.dropped) == (count, 0)
    times = [frame.ts for frame in seen]  # the kernel's receive times, on the wall clock
    assert started <= times[0] and times == sorted(times) and times[-1] <= finished


@pytest.mark.live
def test_kernel_drops_are_counted_when_the_reader_stalls() -> None:
    require_packet_sockets()
    pool = PortPool()
    target = pool.bind(socket.AF_INET, socket.SOCK_DGRAM)
    target.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    count = 20000
    try:
        # the smallest ring (two 128 KiB blocks) and nobody reading while the flood runs
        with LiveSource(
            "lo", sip_ports={_port(target)}, buffer_bytes=256 << 10, idle_timeout=0.1
        ) as source:
            assert _flood(_port(target), count).wait() == 0
            frames = iter(source)
            seen = _collect(frames, 0.3)
            stats = source.statistics()
    finally:
        pool.close()
    assert stats.dropped > 0 and stats.ring_freezes > 0
    assert stats.received == count
    assert len(seen) + stats.dropped == count
    numbers = [int.from_bytes(p, "big") for p in _udp_payloads(seen)]
    assert numbers == sorted(set(numbers))  # what survived is in order, without repeats


# --- a veth pair as the mirror port -----------------------------------------------------------


@pytest.fixture
def mirror_port() -> Iterator[tuple[str, str]]:
    with veth_pair("cvm", up=True, ipv6=True) as pair:
        yield pair


def _mirrored_frame(number: int) -> bytes:
    """An Ethernet frame between two other hosts, as a mirror port delivers it."""
    packet = ipv4(bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2]), 17, udp(5060, 5060, b"%d" % number))
    return ethernet(packet)


def _promiscuous(name: str) -> bool:
    return bool(int((Path("/sys/class/net") / name / "flags").read_text(), 16) & 0x100)


@pytest.mark.live
def test_veth_mirror_port_promiscuous_and_link_flap(mirror_port: tuple[str, str]) -> None:
    near, far = mirror_port
    ip = shutil.which("ip")
    assert ip is not None
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sender.bind((far, 0))
    try:
        with LiveSource(near, sip_ports={5060}, idle_timeout=0.05) as source:
            assert _promiscuous(near)
            frames = iter(source)
            sender.send(_mirrored_frame(1))
            before = _collect(frames, 0.2)
            subprocess.run([ip, "link", "set", near, "down"], check=True)
            _collect(frames, 0.2)
            subprocess.run([ip, "link", "set", near, "up"], check=True)
            time.sleep(0.2)  # veth carrier comes back
            sender.send(_mirrored_frame(2))
            after = _collect(frames, 0.3)
            errors = dict(source.counters)
        assert not _promiscuous(near)  # closing the socket gives the mode back
    finally:
        sender.close()
    assert _udp_payloads(before) == [b"1"]
    assert errors == {"live.socket_error.ENETDOWN": 1}
    assert _udp_payloads(after) == [b"2"]  # capture resumed by itself after the flap


# --- errors -------------------------------------------------------------------------------------


def test_unknown_interface_is_named_with_the_existing_ones() -> None:
    with pytest.raises(LiveCaptureError) as caught:
        LiveSource("nosuch9", sip_ports={5060})
    message = str(caught.value)
    assert "'nosuch9'" in message and "capture.interface" in message
    assert all(name in message for name in interfaces()) and "lo" in interfaces()


@pytest.mark.parametrize("name", ["", "../lo", "lo/..", "a" * 16])
def test_malformed_interface_names_are_refused(name: str) -> None:
    with pytest.raises(LiveCaptureError, match="no network interface"):
        LiveSource(name, sip_ports={5060})


def test_too_small_a_buffer_is_refused() -> None:
    with pytest.raises(LiveCaptureError, match="too small"):
        LiveSource("lo", sip_ports={5060}, buffer_bytes=100_000)


@pytest.mark.live
def test_missing_cap_net_raw_says_how_to_grant_it() -> None:
    require_packet_sockets()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is needed to drop CAP_NET_RAW")
    code = (
        "from gateway.capture.live import LiveSource, LiveCaptureError\n"
        "try:\n    LiveSource('lo', sip_ports={5060})\n"
        "except LiveCaptureError as exc:\n    print(exc)\n"
    )
    result = subprocess.run(
        [setpriv, "--bounding-set=-net_raw", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=HERE.parents[1],
    )
    assert result.returncode == 0, result.stderr
    assert "CAP_NET_RAW" in result.stdout and "setcap" in result.stdout
