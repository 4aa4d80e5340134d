"""Real SIPp calls over loopback while the doctor listens."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from tests.capture.live_helpers import HERE, free_udp_ports, require_packet_sockets, sipp_audio

T = TypeVar("T")


@contextlib.contextmanager
def sipp_call(tmp_path: Path, *, echo: bool) -> Iterator[tuple[list[int], Callable[[], None]]]:
    """A SIPp answerer (echoing the caller's RTP back if ``echo``), its SIP ports, and a function
    that starts the caller: one PCMA call of SIPp's own audio (tests/capture/live_uac_pcma.xml)."""
    require_packet_sockets()
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    (tmp_path / "g711a.pcap").symlink_to(sipp_audio())
    uas, uac, uas_media, uac_media = free_udp_ports(4)
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "20"]
    answerer = [sipp, "-sn", "uas", "-p", str(uas), "-mp", str(uas_media)]
    scenario = str(HERE / "live_uac_pcma.xml")
    caller = [sipp, f"127.0.0.1:{uas}", "-sf", scenario, "-p", str(uac), "-mp", str(uac_media)]
    echoing = ["-rtp_echo"] if echo else []
    processes = [subprocess.Popen([*answerer, *common, *echoing], **quiet)]

    def call() -> None:
        processes.append(subprocess.Popen([*caller, *common], **quiet))

    try:
        yield [uas, uac], call
    finally:
        for process in processes:
            process.kill()
            process.wait()


def while_listening(run: Callable[[], T], action: Callable[[], None]) -> T:
    """``run()``, with ``action`` started in a thread once this process opened a capture
    socket (the checks before the capture check take seconds of their own)."""
    stop = threading.Event()

    def act_once_listening() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            if _own_packet_sockets():
                time.sleep(0.1)  # the socket is bound right after it is opened
                action()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=act_once_listening, daemon=True)
    thread.start()
    try:
        return run()
    finally:
        stop.set()
        thread.join()


def _own_packet_sockets() -> set[str]:
    """Inodes of the AF_PACKET sockets this process holds (from /proc/net/packet)."""
    lines = Path("/proc/net/packet").read_text().splitlines()[1:]
    packet = {line.split()[-1] for line in lines}
    own = set()
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                own.add(target[8:-1])
    return packet & own
