"""A long mutation-fuzz run over every parser: ``pytest -m soak`` (minutes, not in the default run).

Inputs are real frames, SIP messages and SDP bodies from the shared captures, mutated by byte
flips, insertions, deletions, truncation and splicing. Every parser may only raise its own
documented error; the capture session may raise nothing at all.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Callable

import pytest

from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import CaptureFileError, CaptureReader, Frame
from gateway.capture.rtp import RtpError, parse_rtp, rtcp_error
from gateway.capture.sdp import SdpError, parse_sdp
from gateway.capture.session import CaptureSession
from gateway.capture.sip import SipError, parse_sip, sdp_payload
from gateway.config import parse_config
from gateway.seal.sampling_key import SamplingKey

pytestmark = pytest.mark.soak

ROUNDS = int(os.environ.get("CALLVEIL_FUZZ_ROUNDS", "1000000"))
SOURCES = ["SIP-RTP-Normal_Call_two_parties.pcap", "sip_ipv4_tcp.pcap", "ipv6frag.pcap",
           "erspan_sip_ipv4_udp.pcapng", "SIP_DTMF2.cap", "rtp-protocol.pcap"]  # fmt: skip


def mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice((0, 0xFF, 0x7F, 0x80, 0x0D, 0x0A, 0x3A))
        elif op == 2:
            at = rng.randrange(len(buf) + 1)
            buf[at:at] = rng.randbytes(rng.randint(1, 16))
        elif op == 3 and buf:
            at = rng.randrange(len(buf))
            del buf[at : at + rng.randint(1, 16)]
        elif op == 4:
            buf = buf[: rng.randrange(len(buf) + 1)]
        else:
            other = rng.choice(corpus)
            at = rng.randrange(len(buf) + 1)
            buf[at:] = other[rng.randrange(len(other) + 1) :]
    return bytes(buf)


@pytest.fixture(scope="module")
def corpus(pcaps_dir) -> dict[str, list[bytes]]:
    frames, payloads, sdps = [], [], []
    decoder = PacketDecoder()
    for name in SOURCES:
        for frame in CaptureReader(pcaps_dir / name):
            frames.append(frame.data)
            for dg in decoder.decode(frame):
                payloads.append(dg.payload)
                try:
                    body = sdp_payload(parse_sip(dg.payload))
                except SipError:
                    continue
                if body:
                    sdps.append(body)
    return {"frames": frames, "payloads": payloads, "sdp": sdps}


def _run(rng: random.Random, corpus: list[bytes], parse: Callable[[bytes], object],
         allowed: tuple[type[Exception], ...]) -> None:  # fmt: skip
    for _ in range(ROUNDS):
        data = mutate(rng, rng.choice(corpus), corpus)
        with contextlib.suppress(allowed):
            parse(data)


def test_sip_parser(corpus) -> None:
    _run(random.Random(1), corpus["payloads"], parse_sip, (SipError,))


def test_sdp_parser(corpus) -> None:
    _run(random.Random(2), corpus["sdp"], parse_sdp, (SdpError,))


def test_rtp_and_rtcp_parsers(corpus) -> None:
    _run(random.Random(3), corpus["payloads"], parse_rtp, (RtpError,))
    _run(random.Random(4), corpus["payloads"], rtcp_error, ())


def test_packet_decoder(corpus) -> None:
    decoder = PacketDecoder()
    rng = random.Random(5)
    _run(
        rng,
        corpus["frames"],
        lambda d: decoder.decode(Frame(1.0, rng.choice((1, 113, 276, 101)), d)),
        (),
    )
    assert len(decoder.fragments) <= 256 and len(decoder.tcp) <= 2048


def test_capture_file_reader(pcaps_dir, tmp_path) -> None:
    rng = random.Random(6)
    originals = [(pcaps_dir / n).read_bytes()[:20000] for n in SOURCES]
    path = tmp_path / "f.pcap"
    for _ in range(ROUNDS // 100):
        path.write_bytes(mutate(rng, rng.choice(originals), originals))
        try:
            for _frame in CaptureReader(path):
                pass
        except CaptureFileError:
            pass


def test_capture_session(corpus, tmp_path) -> None:
    config = parse_config({"privacy": {"sample_rate": 1.0, "trim_seconds": 0.0}})
    session = CaptureSession(config, SamplingKey.load_or_create(tmp_path / "k"))
    rng = random.Random(7)
    frames = corpus["frames"]
    for i in range(ROUNDS):
        data = (
            frames[i % len(frames)]
            if rng.random() < 0.5
            else mutate(rng, rng.choice(frames), frames)
        )
        session.feed(Frame(i * 0.001, 1, data))
    session.finish()
