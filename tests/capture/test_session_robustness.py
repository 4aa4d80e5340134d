"""Bad input never crashes the capture stage, and floods never grow its memory without bound."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.capture.pcapfile import CaptureReader, Frame
from gateway.capture.session import CaptureSession
from gateway.config import parse_config
from gateway.events import CallStarted
from gateway.seal.sampling_key import SamplingKey
from tests.capture.packet_helpers import ethernet, ipv4, udp

A = bytes([192, 0, 2, 10])
B = bytes([198, 51, 100, 20])


def session(tmp_path: Path, **capture) -> CaptureSession:
    config = parse_config(
        {"privacy": {"sample_rate": 1.0, "trim_seconds": 0.0}, "capture": capture}
    )
    return CaptureSession(config, SamplingKey.load_or_create(tmp_path / "k"))


def frame(ts: float, sport: int, dport: int, payload: bytes) -> Frame:
    return Frame(ts, 1, ethernet(ipv4(A, B, 17, udp(sport, dport, payload))))


def invite(call_id: str, rtp_port: int) -> bytes:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
    )
    return (
        "INVITE sip:100@198.51.100.20 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK-1\r\n"
        f"From: <sip:200@192.0.2.10>;tag=a{call_id}\r\n"
        "To: <sip:100@198.51.100.20>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.sampled_from([5060, 4000, 4001]), st.binary(max_size=300)), max_size=20)
)
def test_garbage_on_sip_and_media_ports_never_raises(tmp_path, items) -> None:
    s = session(tmp_path)
    s.feed(frame(0.0, 5060, 5060, invite("fuzz-call", 4000)))
    for i, (port, payload) in enumerate(items):
        s.feed(frame(0.02 * i, port, port, payload))
    s.finish()


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=400), st.sampled_from([1, 113, 276, 101, 228, 229, 0, 9999]))
def test_random_frames_of_any_link_type_never_raise(tmp_path, data, linktype) -> None:
    s = session(tmp_path)
    s.feed(Frame(1.0, linktype, data))
    s.finish()


def test_mutated_real_call_never_raises(pcaps_dir, tmp_path) -> None:
    frames = list(CaptureReader(pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"))
    rng = random.Random(1234)
    for _ in range(3):
        s = session(tmp_path)
        for f in frames:
            data = bytearray(f.data)
            for _ in range(rng.randint(0, 3)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if rng.random() < 0.05:
                data = data[: rng.randrange(len(data))]
            s.feed(Frame(f.ts, f.linktype, bytes(data)))
        s.finish()
        assert s.report.frames == len(frames)


def test_invite_flood_stays_within_max_calls(tmp_path) -> None:
    s = session(tmp_path, max_calls=500)
    started = 0
    for i in range(5000):
        started += sum(
            isinstance(e, CallStarted)
            for e in s.feed(frame(i * 0.001, 5060, 5060, invite(f"c{i}", 10000 + i)))
        )
        assert s._dialogs.active_calls <= 500
        assert len(s._calls) <= 500
    assert started == 5000
    s.finish()
    assert sum(v for k, v in s.report.dialog_layer.items() if "overflow" in k) > 0


def test_unmatched_flow_flood_is_bounded(tmp_path) -> None:
    s = session(tmp_path)
    rtp = struct.pack("!BBHII", 0x80, 8, 1, 160, 1234) + bytes(160)
    for i in range(20000):
        s.feed(frame(i * 0.0001, 20000 + i % 20000, 30000 + i // 20000, rtp))
    s.finish()
    assert s.report.unmatched_packets == 20000
    assert s.report.unmatched_flows == 4096


def test_truncated_capture_is_reported(pcaps_dir, tmp_path, capsys) -> None:
    from gateway.capture.replay import replay_file

    raw = (pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(raw[: len(raw) // 2 + 7])
    config = parse_config({"privacy": {"sampling_key_file": str(tmp_path / "k")}})
    assert replay_file(cut, config, progress=False) == 0
    out = capsys.readouterr().out
    assert "file truncated" in out
    frames = int(out.split("frames read")[1].split()[0])
    assert 0 < frames < 5651  # everything before the cut, nothing invented after it


@pytest.mark.parametrize("content", [b"", b"hello, not a capture\n", bytes(range(256)) * 4])
def test_a_file_that_is_not_a_capture_is_refused_clearly(tmp_path, capsys, content) -> None:
    from gateway.capture.replay import replay_file

    bad = tmp_path / "notes.pcap"
    bad.write_bytes(content)
    config = parse_config({"privacy": {"sampling_key_file": str(tmp_path / "k")}})
    assert replay_file(bad, config, progress=False) == 1
    err = capsys.readouterr().err
    assert "cannot replay" in err and "notes.pcap" in err
