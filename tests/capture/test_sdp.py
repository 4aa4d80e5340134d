"""SDP parsing: crafted bodies for each rule, and every SDP body of the shared captures checked
against tshark's SDP dissector."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.capture.sdp import (
    STATIC_PAYLOAD_TYPES,
    Codec,
    SdpError,
    parse_sdp,
)
from gateway.capture.sip import parse_sip, sdp_payload
from tests.capture.tshark_reference import TsharkSip, tshark_sip_captures


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    head = ["v=0", "o=- 1 1 IN IP4 192.0.2.1", "s=-", "t=0 0"]
    return eol.join([*head, *lines]).encode() + eol.encode()


def ip(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)


def test_basic_audio_offer() -> None:
    desc = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.10",
            "m=audio 49170 RTP/AVP 0 8 101",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-16",
            "a=ptime:20",
        )
    )
    assert desc.skipped == 0
    (audio,) = desc.media
    assert (audio.kind, audio.port, audio.proto) == ("audio", 49170, "RTP/AVP")
    assert audio.addr == ip("192.0.2.10")
    assert audio.formats == [0, 8, 101]
    assert audio.codecs == {
        0: Codec("PCMU", 8000),
        8: Codec("PCMA", 8000),
        101: Codec("TELEPHONE-EVENT", 8000),
    }
    assert (audio.ptime, audio.direction, audio.encrypted) == (20, "sendrecv", False)
    assert audio.rtcp_port == 49171  # RFC 3550 default: the next port


def test_media_connection_overrides_session_and_ipv6() -> None:
    desc = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.10",
            "m=audio 4000 RTP/AVP 0",
            "m=audio 4002 RTP/AVP 8",
            "c=IN IP6 2001:db8::1",
            "m=video 4004 RTP/AVP 31",
            "c=IN IP4 224.2.1.1/127/2",
        )
    )
    assert [m.addr for m in desc.media] == [ip("192.0.2.10"), ip("2001:db8::1"), ip("224.2.1.1")]
    assert desc.media[2].kind == "video"
    assert desc.media[2].codecs == {31: Codec("H261", 90000)}


def test_host_name_connection_has_no_address() -> None:
    desc = parse_sdp(sdp("c=IN IP4 media.example.com", "m=audio 4000 RTP/AVP 0"))
    assert desc.media[0].addr is None
    assert desc.skipped == 0
    broken = parse_sdp(sdp("c=IN IP4 192.0.2.300", "m=audio 4000 RTP/AVP 0"))
    assert (broken.media[0].addr, broken.skipped) == (None, 1)


@pytest.mark.parametrize(
    ("session_attr", "media_attr", "direction"),
    [
        (None, None, "sendrecv"),
        ("a=sendonly", None, "sendonly"),
        ("a=recvonly", "a=sendrecv", "sendrecv"),
        (None, "a=inactive", "inactive"),
        ("a=inactive", "a=recvonly", "recvonly"),
    ],
)
def test_direction_session_and_media_level(
    session_attr: str | None, media_attr: str | None, direction: str
) -> None:
    lines = ["c=IN IP4 192.0.2.10"]
    lines += [session_attr] if session_attr else []
    lines += ["m=audio 4000 RTP/AVP 0"]
    lines += [media_attr] if media_attr else []
    assert parse_sdp(sdp(*lines)).media[0].direction == direction


@pytest.mark.parametrize(
    ("connection", "attr", "direction"),
    [
        ("c=IN IP4 0.0.0.0", None, "sendonly"),
        ("c=IN IP4 0.0.0.0", "a=recvonly", "inactive"),
        ("c=IN IP6 ::", "a=sendonly", "sendonly"),
    ],
)
def test_hold_by_unspecified_address(connection: str, attr: str | None, direction: str) -> None:
    lines = [connection, "m=audio 4000 RTP/AVP 0", *([attr] if attr else [])]
    audio = parse_sdp(sdp(*lines)).media[0]
    assert (audio.addr, audio.direction) == (None, direction)


def test_rejected_stream_and_several_media() -> None:
    desc = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.10",
            "m=audio 4000 RTP/AVP 0",
            "m=video 0 RTP/AVP 31",
            "m=image 4006 udptl t38",
            "a=T38FaxVersion:0",
            "m=audio 4008/2 RTP/AVP 8",
        )
    )
    assert [(m.kind, m.port) for m in desc.media] == [
        ("audio", 4000),
        ("video", 0),
        ("image", 4006),
        ("audio", 4008),
    ]
    video, image = desc.media[1], desc.media[2]
    assert video.rtcp_port is None  # a rejected stream has no RTCP either
    assert (image.proto, image.formats, image.codecs, image.rtcp_port) == ("udptl", [], {}, None)


@pytest.mark.parametrize(
    ("proto", "attrs", "encrypted"),
    [
        ("RTP/AVP", [], False),
        ("RTP/SAVP", ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"], True),
        ("RTP/SAVPF", [], True),
        ("UDP/TLS/RTP/SAVPF", ["a=fingerprint:sha-256 AB:CD", "a=setup:actpass"], True),
        ("RTP/AVP", ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA"], True),
    ],
)
def test_encryption(proto: str, attrs: list[str], encrypted: bool) -> None:
    desc = parse_sdp(sdp("c=IN IP4 192.0.2.10", f"m=audio 4000 {proto} 0", *attrs))
    assert desc.media[0].encrypted is encrypted


def test_session_level_fingerprint_covers_all_media() -> None:
    desc = parse_sdp(
        sdp("a=fingerprint:sha-256 AB:CD", "m=audio 9 RTP/AVPF 111", "m=video 9 RTP/AVPF 96")
    )
    assert [m.encrypted for m in desc.media] == [True, True]


def test_rtpmap_details_and_static_defaults() -> None:
    desc = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.10",
            "m=audio 4000 RTP/AVP 111 9 10 11 13 18 3 4 96 97",
            "a=rtpmap:111 opus/48000/2",
            "a=rtpmap:97 L16/16000/2",
            "a=rtpmap:98 unused/8000",
        )
    )
    codecs = desc.media[0].codecs
    assert codecs[111] == Codec("OPUS", 48000, 2)
    assert codecs[97] == Codec("L16", 16000, 2)
    for pt in (9, 10, 11, 13, 18, 3, 4):
        assert codecs[pt] == STATIC_PAYLOAD_TYPES[pt]
    assert codecs[9] == Codec("G722", 8000)  # RTP clock rate 8000 (RFC 3551), audio is 16 kHz
    assert codecs[10] == Codec("L16", 44100, 2)
    assert codecs[11] == Codec("L16", 44100, 1)
    assert 96 not in codecs  # dynamic payload type without rtpmap: unknown codec
    assert 98 not in codecs  # rtpmap for a payload type the m= line does not list


def test_rtpmap_overrides_static_table() -> None:
    desc = parse_sdp(sdp("c=IN IP4 192.0.2.10", "m=audio 4000 RTP/AVP 3", "a=rtpmap:3 GSM/8000"))
    assert desc.media[0].codecs == {3: Codec("GSM", 8000)}


def test_rtcp_port() -> None:
    desc = parse_sdp(
        sdp(
            "c=IN IP4 192.0.2.10",
            "m=audio 4000 RTP/AVP 0",
            "a=rtcp:5005 IN IP4 192.0.2.11",
            "m=audio 4002 RTP/AVP 0",
            "a=rtcp-mux",
            "m=audio 4004 RTP/AVP 0",
        )
    )
    assert [m.rtcp_port for m in desc.media] == [5005, 4002, 4005]


def test_malformed_lines_are_skipped_and_counted() -> None:
    body = sdp(
        "c=IN IP4 192.0.2.10",
        "garbage",
        "Q=upper case type",
        "c=IN XX 1.2.3.4",
        "m=audio 70000 RTP/AVP 0",  # port out of range: the whole section is skipped
        "a=rtpmap:0 PCMA/8000",  # belongs to the skipped section
        "m=audio 4000 RTP/AVP 0 8 x 300",
        "a=rtpmap:8 PCMA",
        "a=rtpmap:300 X/8000",
        "a=ptime:abc",
        "a=rtcp:notaport",
        "a=ptime:30",
    )
    desc = parse_sdp(body)
    (audio,) = desc.media
    assert audio.port == 4000
    assert audio.formats == [0, 8]  # "x" and 300 are not RTP payload types
    assert audio.codecs == {0: Codec("PCMU", 8000), 8: Codec("PCMA", 8000)}
    assert audio.ptime == 30
    assert desc.skipped == 8


def test_line_endings_and_blank_lines() -> None:
    body = b"\r\n" + sdp("c=IN IP4 192.0.2.10", "", "m=audio 4000 RTP/AVP 0", eol="\n")
    assert parse_sdp(body).media[0].addr == ip("192.0.2.10")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"o=- 1 1 IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 0\r\n",
        b"hello world",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\nm=audio\r\n",
    ],
)
def test_bodies_without_sdp_structure_raise(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)


def test_media_sections_are_bounded() -> None:
    body = sdp("c=IN IP4 192.0.2.10", *[f"m=audio {4000 + 2 * i} RTP/AVP 0" for i in range(100)])
    desc = parse_sdp(body)
    assert len(desc.media) == 32
    assert desc.skipped == 68


# -- the shared captures, against tshark ----------------------------------------------------------

_DIRECTIONS = {"sendrecv", "sendonly", "recvonly", "inactive"}


def _sdp_messages(tshark: str, pcaps_dir: Path) -> list[tuple[str, TsharkSip, bytes]]:
    found = []
    for name, messages in tshark_sip_captures(tshark, pcaps_dir).items():
        if name.startswith("c07-sip"):
            continue  # PROTOS fuzz cases: malformed SIP, see test_sip
        for ref in messages:
            if ref.fields["sdp.media"]:
                body = sdp_payload(parse_sip(ref.dg.payload))
                assert body is not None, f"{name} at {ref.dg.ts}: tshark sees SDP, we do not"
                found.append((name, ref, body))
    return found


def test_every_capture_sdp_matches_tshark(tshark: str, pcaps_dir: Path) -> None:
    bodies = _sdp_messages(tshark, pcaps_dir)
    assert len(bodies) > 1500
    for name, ref, body in bodies:
        where = f"{name} at {ref.dg.ts}"
        desc = parse_sdp(body)
        assert desc.skipped == 0, where
        media_lines = [line.split() for line in ref.fields["sdp.media"]]
        assert [(m.kind, str(m.port), m.proto) for m in desc.media] == [
            (line[0], line[1].partition("/")[0], line[2]) for line in media_lines
        ], where
        for media, line in zip(desc.media, media_lines, strict=True):
            if "RTP" in media.proto.upper():
                assert media.formats == [int(f) for f in line[3:]], where
        # Every rtpmap tshark decoded for a listed payload type is our codec for it.
        pts = [a.split()[0][7:] for a in ref.fields["sdp.media_attr"] if a.startswith("rtpmap:")]
        mimes, rates = ref.fields["sdp.mime.type"], ref.fields["sdp.sample_rate"]
        ours = {
            (str(pt), c.encoding, str(c.clock_rate))
            for m in desc.media
            for pt, c in m.codecs.items()
        }
        listed = {str(pt) for m in desc.media for pt in m.formats}
        theirs = zip(pts, mimes, rates, strict=True)
        assert {(pt, mime.upper(), rate) for pt, mime, rate in theirs if pt in listed} <= ours, (
            where
        )
        # Every address we kept is one tshark read from a c= line.
        addresses = {ip(a) for a in ref.fields["sdp.connection_info.address"] if a}
        assert {m.addr for m in desc.media if m.addr is not None} <= addresses, where
        # With one media section and one direction attribute, the direction is that one
        # (unless the section is held with an unspecified address).
        directions = [a for a in ref.fields["sdp.media_attr"] if a in _DIRECTIONS]
        if len(desc.media) == 1 and len(directions) == 1 and desc.media[0].addr is not None:
            assert desc.media[0].direction == directions[0], where


def test_srtp_captures_are_marked_encrypted(tshark: str, pcaps_dir: Path) -> None:
    """SDES-SRTP (RTP/SAVP with a=crypto) and WebRTC (DTLS fingerprint) bodies are encrypted."""
    seen = {"RTP/SAVP": 0, "UDP/TLS/RTP/SAVPF": 0, "RTP/AVP": 0}
    for name, ref, body in _sdp_messages(tshark, pcaps_dir):
        crypto = any(
            a.startswith(("crypto:", "fingerprint:")) for a in ref.fields["sdp.media_attr"]
        )
        for media in parse_sdp(body).media:
            assert media.encrypted == (crypto or "SAVP" in media.proto), f"{name} at {ref.dg.ts}"
            if media.proto in seen:
                seen[media.proto] += 1
    assert all(seen.values()), seen
