"""The capture stage live: a real SIPp call over loopback, with the kernel filter following it.

The media port of the call is not told to the filter: the session learns it from SDP and
opens the kernel filter for it only when the call is sampled. An unsampled call's RTP never
reaches userspace at all.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from gateway.capture.replay import listen
from gateway.config import parse_config
from tests.capture.live_helpers import HERE, free_udp_ports, require_packet_sockets, sipp_audio

pytestmark = pytest.mark.live


def _call(tmp_path: Path, sample_rate: float, trim: float):
    require_packet_sockets()
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    (tmp_path / "g711a.pcap").symlink_to(sipp_audio())
    uas, uac, uas_media, uac_media = free_udp_ports(4)
    config = parse_config(
        {
            "capture": {"sip_ports": [uas, uac]},
            "privacy": {
                "sample_rate": sample_rate,
                "trim_seconds": trim,
                "sampling_key_file": str(tmp_path / "sampling.key"),
            },
        }
    )
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "cwd": tmp_path}
    common = ["-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "20"]
    answerer = subprocess.Popen(
        [sipp, "-sn", "uas", "-p", str(uas), "-mp", str(uas_media), *common], **quiet
    )
    time.sleep(0.5)
    caller = subprocess.Popen(
        [sipp, f"127.0.0.1:{uas}", "-sf", str(HERE / "live_uac_pcma.xml"), "-p", str(uac),
         "-mp", str(uac_media), *common],
        **quiet,
    )  # fmt: skip
    ended: list[float] = []

    def call_over() -> bool:
        if caller.poll() is None:
            return False
        ended.append(time.monotonic())
        return time.monotonic() - ended[0] > 0.5

    try:
        result = listen("lo", config, seconds=18, until=call_over)
        assert caller.wait() == 0, "SIPp's caller failed its scenario"
    finally:
        for process in (answerer, caller):
            if process.poll() is None:
                process.kill()
                process.wait()
    return result


def test_sampled_call_is_followed_trimmed_and_decoded(tmp_path) -> None:
    result = _call(tmp_path, sample_rate=1.0, trim=2.0)
    r = result.report
    assert (r.calls, r.answered) == (1, 1)
    assert dict(r.policies) == {"analytics": 1}
    assert dict(r.end_reasons) == {"bye": 1}
    # SIPp plays 236 packets of 30 ms; the first ones may pass before the filter opens
    assert 200 <= r.rtp_packets_matched <= 236
    assert r.trimmed_seconds == pytest.approx(2.0, abs=0.03)
    assert 4.0 < r.decoded_seconds < 5.1
    assert result.events["started"] == result.events["ended"] == 1
    assert result.kernel_filter == "per-call" and result.kernel_dropped == 0


def test_unsampled_call_media_never_reaches_userspace(tmp_path) -> None:
    result = _call(tmp_path, sample_rate=0.0, trim=10.0)
    r = result.report
    assert (r.calls, r.answered) == (1, 1)
    assert dict(r.policies) == {"drop": 1}
    # only the six SIP messages passed the kernel filter: no RTP at all
    assert result.kernel_received == r.frames == 6
    assert r.rtp_packets_matched == r.rtp_packets_dropped_unsampled == 0
    assert result.events["chunks"] == 0
