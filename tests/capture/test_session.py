"""The capture stage end to end on real captures: policy, trim, roles, undecodable calls."""

from __future__ import annotations

import audioop
import socket
from pathlib import Path

import numpy as np
import pytest

from gateway.capture.pcapfile import CaptureReader
from gateway.capture.session import CaptureSession
from gateway.config import parse_config
from gateway.events import (
    AudioChunk,
    CallEnded,
    CallStarted,
    CaptureEvent,
    EndReason,
    Policy,
    Role,
    Undecodable,
)
from gateway.seal.sampling_key import SamplingKey
from tests.capture.tshark_reference import tshark_fields


def run(path: Path, tmp_path: Path, **sections) -> tuple[CaptureSession, list[CaptureEvent]]:
    sections.setdefault("privacy", {"sample_rate": 1.0, "trim_seconds": 0.0})
    session = CaptureSession(parse_config(sections), SamplingKey.load_or_create(tmp_path / "k"))
    events: list[CaptureEvent] = []
    for frame in CaptureReader(path):
        events += session.feed(frame)
    events += session.finish()
    return session, events


def audio_by_role(events: list[CaptureEvent]) -> dict[tuple[str, Role], np.ndarray]:
    parts: dict[tuple[str, Role], list[AudioChunk]] = {}
    for e in events:
        if isinstance(e, AudioChunk):
            parts.setdefault((e.ref.token, e.role), []).append(e)
    out = {}
    for key, chunks in parts.items():
        offsets = [c.offset for c in chunks]
        assert offsets == sorted(offsets)
        ends = np.cumsum([0] + [len(c.pcm) for c in chunks])
        assert list(ends[:-1]) == offsets, "chunks of a direction are contiguous"
        out[key] = np.concatenate([c.pcm for c in chunks])
    return out


CALL_CAPTURES = [
    "SIP-RTP-Normal_Call_two_parties.pcap",
    "SIP_CALL_RTP_G711",
    "SIP_DTMF2.cap",
    "sip-rtp-g711.pcap",
    "Asterisk_ZFONE_XLITE.pcap",
    "b2bua-asterisk.pcapng",
    "rtp-protocol.pcap",
    "sip-488-codec-reject.pcapng",
    "sipp-branch-scenario.pcapng",
    "codec-negotiation.pcap",
    "register-invite-reinvite-bye.pcap",
    # not FAX-Call-t38-CA-TDM-SIP-FB-1.pcap: its switch to T.38 is signalled by MEGACO (H.248),
    # which callveil does not follow, so fax packets on the audio flow parse as RTP
    "sip_ipv4_tcp.pcap",
    "aaa.pcap",
    "generated/sipp-loopback-pcma-call.pcapng",
]


@pytest.mark.parametrize("name", CALL_CAPTURES)
def test_calls_and_media_agree_with_tshark(name, pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / name
    session, events = run(path, tmp_path)
    invites = {
        row[0] for row in tshark_fields(tshark, path, 'sip.Method == "INVITE"', "sip.Call-ID")
    }
    started = [e for e in events if isinstance(e, CallStarted)]
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert len(started) == len(invites) == session.report.calls
    assert {e.ref for e in ended} == {e.ref for e in started}
    # the reference: tshark's RTP packets on flows that some SDP in the file announced
    announced = _sdp_endpoints(tshark, path)
    rows = tshark_fields(
        tshark, path, "rtp && !rtcp", "ip.src", "udp.srcport", "ip.dst", "udp.dstport"
    )
    expected = sum(
        ((d, dp) in announced or (s, sp) in announced) and (s, sp) != (d, dp)
        for s, sp, d, dp in rows
    )
    report = session.report
    seen = report.rtp_packets_matched + report.competing_packets + report.late_media_packets
    assert seen == expected


def _sdp_endpoints(tshark: str, path: Path) -> set[tuple[str, str]]:
    # SDP carried by SIP only: MGCP and MEGACO (H.248) are not callveil's business
    rows = tshark_fields(
        tshark, path, "sip && sdp", "sdp.connection_info.address", "sdp.media.port"
    )
    endpoints = set()
    for row in rows:
        addresses, ports = row[0].split(","), row[1].split(",") if len(row) > 1 else []
        if len(addresses) != len(ports):  # one session-level c= for every m= line
            addresses = addresses[:1] * len(ports)
        endpoints.update(zip(addresses, ports, strict=True))
    return endpoints


def test_every_shared_capture_replays_without_error(pcaps_dir, tmp_path) -> None:
    files = sorted(p for p in pcaps_dir.rglob("*") if p.is_file() and p.name != "MANIFEST.md")
    assert len(files) > 60
    for path in files:
        if path.name == "c07-sip-r2.cap":  # NetMon 2, not pcap: refused with a clear error
            continue
        session, _ = run(path, tmp_path)
        assert session.report.frames > 0, path.name


def test_unsampled_calls_are_never_parsed_or_decoded(pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"
    session, events = run(path, tmp_path, privacy={"sample_rate": 0.0})
    assert [e.policy for e in events if isinstance(e, CallStarted)] == [Policy.DROP] * 2
    assert not any(isinstance(e, AudioChunk) for e in events)
    report = session.report
    assert report.rtp_packets_matched == 0 and report.decoded_seconds == 0
    rtp = len(tshark_fields(tshark, path, "rtp && !rtcp", "frame.number"))
    assert report.rtp_packets_dropped_unsampled == rtp
    assert session.media_ports() == set(), "no port of a dropped call reaches userspace"


def _reference_decode(tshark: str, path: Path, dst: str, dport: int) -> np.ndarray:
    rows = tshark_fields(
        tshark,
        path,
        f"rtp && ip.dst == {dst} && udp.dstport == {dport} && rtp.p_type == 0",
        "rtp.seq",
        "rtp.payload",
    )
    rows.sort(key=lambda r: int(r[0]))
    payload = b"".join(bytes.fromhex(r[1].replace(":", "")) for r in rows)
    return np.frombuffer(audioop.ulaw2lin(payload, 2), dtype="<i2")


def test_trim_cuts_the_first_seconds_before_decoding(pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"
    _, full_events = run(path, tmp_path)
    session, events = run(path, tmp_path, privacy={"sample_rate": 1.0, "trim_seconds": 10.0})
    full, trimmed = audio_by_role(full_events), audio_by_role(events)
    assert len(trimmed) == 4
    for (_ref, role), audio in trimmed.items():
        # the same direction untrimmed: same call order, same role
        match = [a for (r, ro), a in full.items() if ro == role and len(a) == len(audio) + 80000]
        assert match, "each direction lost exactly 10 s (80,000 samples at 8 kHz)"
        assert any(np.array_equal(m[80000:], audio) for m in match)
    ended = [e for e in events if isinstance(e, CallEnded)]
    trimmed_samples = [d.trimmed_samples for e in ended for d in e.directions if d.packets]
    decoded_samples = [d.decoded_samples for e in ended for d in e.directions if d.packets]
    assert trimmed_samples == [80000] * 4
    assert session.report.trimmed_seconds == pytest.approx(40.0)
    # packets wholly inside the trim window are never decoded: decoded + trimmed = media
    full_decoded = sorted(
        d.decoded_samples
        for e in full_events
        if isinstance(e, CallEnded)
        for d in e.directions
        if d.packets
    )
    assert sorted(d + 80000 for d in decoded_samples) == full_decoded


def test_decoded_audio_matches_an_independent_decoder(pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"
    _, events = run(path, tmp_path)
    decoded = sorted(audio_by_role(events).values(), key=len)
    streams = tshark_fields(tshark, path, "rtp && !rtcp", "ip.dst", "udp.dstport")
    references = sorted(
        (_reference_decode(tshark, path, dst, int(port)) for dst, port in set(map(tuple, streams))),
        key=len,
    )
    assert len(decoded) == len(references) == 4
    for ours, ref in zip(decoded, references, strict=True):
        assert np.array_equal(ours, ref)


def test_contract_calls_are_kept_whole(pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / "SIP-RTP-Normal_Call_two_parties.pcap"
    agents = tshark_fields(tshark, path, 'sip.Method == "INVITE"', "sip.User-Agent")
    assert all(row[0] for row in agents), "each INVITE has a User-Agent header to match"
    contract = {"rules": [{"kind": "header", "header": "User-Agent", "pattern": "."}]}
    session, events = run(
        path, tmp_path, privacy={"sample_rate": 0.0, "trim_seconds": 10.0}, contract=contract
    )
    assert {e.policy for e in events if isinstance(e, CallStarted)} == {Policy.CONTRACT}
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert all(d.trimmed_samples == 0 for e in ended for d in e.directions)
    assert session.report.decoded_seconds > 100
    assert session.report.sampling_rate is None  # contract calls are not part of the sample


def test_roles_follow_the_configured_operator_range(pcaps_dir, tshark, tmp_path) -> None:
    path = pcaps_dir / "sip-rtp-g711.pcap"
    # the side that sends the audio (sendonly) is put in the operator range
    sender = tshark_fields(tshark, path, "rtp", "ip.src")[0][0]
    family = socket.AF_INET6 if ":" in sender else socket.AF_INET
    socket.inet_pton(family, sender)
    bits = 128 if family == socket.AF_INET6 else 32
    _, events = run(path, tmp_path, roles={"operator_networks": [f"{sender}/{bits}"]})
    roles = {e.role for e in events if isinstance(e, AudioChunk)}
    assert roles == {Role.OPERATOR}
    for e in events:
        if isinstance(e, CallStarted):
            assert e.roles == frozenset({Role.OPERATOR, Role.CUSTOMER})


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("sip-rtp-g729a.pcap", Undecodable.CODEC),
        ("sip-rtp-opus.pcap", Undecodable.CODEC),
        ("sip-rtp-gsm.pcap", Undecodable.CODEC),
        ("sip-rtp-speex.pcap", Undecodable.CODEC),
        ("SIP-SRTP-Normal_Call_two_parties.pcap", Undecodable.SRTP),
    ],
)
def test_undecodable_calls_are_counted_with_their_reason(name, reason, pcaps_dir, tmp_path) -> None:
    session, events = run(pcaps_dir / name, tmp_path)
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert ended and all(e.undecodable is reason for e in ended)
    assert not any(isinstance(e, AudioChunk) for e in events)
    assert sum(session.report.undecodable.values()) == len(ended)


def test_end_reasons_on_real_calls(pcaps_dir, tmp_path) -> None:
    _, events = run(pcaps_dir / "sip-rtp-g711.pcap", tmp_path)
    assert [e.reason for e in events if isinstance(e, CallEnded)] == [
        EndReason.BYE,
        EndReason.CAPTURE_END,
    ]
    _, events = run(pcaps_dir / "SIP_DTMF2.cap", tmp_path)
    assert EndReason.REJECTED in {e.reason for e in events if isinstance(e, CallEnded)}
