"""Property tests: hostile input never raises anything but the documented errors, and the
dialog tracker survives any sequence of parsed messages within its bounds."""

from __future__ import annotations

import contextlib
import random
from collections import defaultdict
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.capture.datagram import UDP, Datagram
from gateway.capture.dialogs import (
    CallAnswered,
    CallOffered,
    CallTerminated,
    DialogEvent,
    DialogTracker,
    MediaNegotiated,
)
from gateway.capture.sdp import SdpError, parse_sdp
from gateway.capture.sip import SipError, SipMessage, parse_sip, sdp_payload
from tests.capture.tshark_reference import tshark_sip_captures

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"a=sendonly\r\nm=audio 4000 RTP/SAVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA\r\na=ptime:20\r\na=rtcp:4001\r\n"
    b"m=video 0 RTP/AVP 31\r\nc=IN IP6 2001:db8::1\r\nm=image 4006 udptl t38\r\n"
)
INVITE = (
    b"INVITE sip:200@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1\r\n"
    b'From: "A \\"B\\" C" <sip:alice@example.com>;tag=a1\r\n'
    b"t: tel:+15550100;tag=b1\r\n"
    b"i: c1@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Subject: folded\r\n continuation\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
)
MULTIPART = (
    b"SIP/2.0 183 Progress\n"
    b"From: <sips:alice@example.com>;tag=a1\nTo: <sip:bob@example.com>;tag=b1\n"
    b"Call-ID: c2\nCSeq: 1 INVITE\nContent-Type: multipart/mixed;boundary=xyz\n\n"
    b"--xyz\nContent-Type: application/sdp\n\n" + SDP + b"\n--xyz--\n"
)
SEEDS = [INVITE, MULTIPART]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A valid message with a few byte-level and line-level edits."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup_line", "drop_line", "crlf"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b":", b";", b"<", b'"', b"\r\n", b" ", b"\x00"]))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 20))]
        elif op in ("dup_line", "drop_line"):
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "dup_line":
                lines.insert(i, lines[i])
            else:
                del lines[i]
            data = bytearray(b"\n".join(lines))
        else:
            data = bytearray(bytes(data).replace(b"\r\n", b"\n"))
    return bytes(data)


def _parse_all(data: bytes) -> None:
    """Everything a message goes through before the tracker: only documented errors."""
    try:
        msg = parse_sip(data)
    except SipError:
        return
    body = sdp_payload(msg)
    if body is not None:
        with contextlib.suppress(SdpError):
            parse_sdp(body)


@settings(max_examples=400)
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    _parse_all(data)
    with contextlib.suppress(SdpError):
        parse_sdp(data)


@settings(max_examples=500)
@given(mutated(SEEDS))
def test_mutated_messages(data: bytes) -> None:
    _parse_all(data)


@settings(max_examples=300)
@given(mutated([SDP]))
def test_mutated_sdp(data: bytes) -> None:
    with contextlib.suppress(SdpError):
        parse_sdp(data)


def test_mutated_real_messages(tshark: str, pcaps_dir: Path) -> None:
    """Seeded random edits of every distinct SIP payload in the shared captures."""
    payloads = {
        ref.dg.payload for msgs in tshark_sip_captures(tshark, pcaps_dir).values() for ref in msgs
    }
    rng = random.Random(20240611)
    for payload in sorted(payloads)[:600]:
        for _ in range(4):
            data = bytearray(payload)
            for _ in range(rng.randint(1, 8)):
                pos = rng.randrange(len(data))
                action = rng.random()
                if action < 0.4:
                    data[pos] = rng.randrange(256)
                elif action < 0.7:
                    del data[pos : pos + rng.randint(1, 40)]
                else:
                    data[pos:pos] = rng.choice([b"\r\n", b"\r\n ", b":", b";tag=", b"<", b'"'])
                if not data:
                    break
            _parse_all(bytes(data))


# -- the tracker over arbitrary message sequences -------------------------------------------------

_METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "PRACK", "UPDATE", "INFO", "REGISTER", "OPTIONS"]
_STATUSES = [100, 180, 183, 200, 202, 301, 401, 407, 408, 486, 487, 488, 491, 500, 603]
_BODIES = [b"", SDP, b"v=0\r\nnot sdp\r\n", SDP.replace(b"192.0.2.10", b"0.0.0.0")]


@st.composite
def sip_messages(draw: st.DrawFn) -> SipMessage:
    call_id = draw(st.sampled_from(["c1", "c2", "c3", "c4", "c5", "c6"]))
    from_tag, to_tag = (
        draw(st.sampled_from(["a", "b", "c", ""])),
        draw(st.sampled_from(["", "a", "b", "c"])),
    )
    cseq = draw(st.integers(1, 4))
    body = draw(st.sampled_from(_BODIES))
    branch = draw(st.sampled_from(["z9hG4bK-1", "z9hG4bK-2", "z9hG4bK-3"]))
    if draw(st.booleans()):
        method = draw(st.sampled_from(_METHODS))
        start = f"{method} sip:200@example.com SIP/2.0"
    else:
        method = draw(st.sampled_from(["INVITE", "INVITE", "BYE", "CANCEL", "PRACK", "UPDATE"]))
        start = f"SIP/2.0 {draw(st.sampled_from(_STATUSES))} X"
    from_value = "<sip:alice@example.com>" + (f";tag={from_tag}" if from_tag else "")
    to_value = "<sip:200@example.com>" + (f";tag={to_tag}" if to_tag else "")
    lines = [
        start,
        f"Via: SIP/2.0/UDP 192.0.2.10;branch={branch}",
        f"From: {from_value}",
        f"To: {to_value}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
    ]
    if body:
        lines.append("Content-Type: application/sdp")
    raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
    return parse_sip(raw)


_steps = st.one_of(
    st.tuples(st.just("msg"), sip_messages(), st.floats(0, 120)),
    st.tuples(st.just("expire"), st.none(), st.floats(0, 4000)),
    st.tuples(st.just("touch"), st.sampled_from(["c1", "c2", "c3"]), st.floats(0, 100)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_steps, max_size=60), st.integers(1, 4))
def test_tracker_survives_any_sequence(steps: list, max_calls: int) -> None:
    tracker = DialogTracker(max_calls=max_calls)
    events: list[DialogEvent] = []
    now = 0.0
    for kind, arg, dt in steps:
        now += dt
        if kind == "msg":
            events += tracker.handle(
                arg, Datagram(now, b"\x01" * 4, 5060, b"\x02" * 4, 5060, UDP, b"")
            )
        elif kind == "expire":
            events += tracker.expire(now)
        else:
            tracker.touch(arg, now)
        assert tracker.active_calls <= max_calls
    events += tracker.end_all()
    assert tracker.active_calls == 0

    # Per Call-ID: offered, then media/answer, then exactly one termination; repeat allowed
    # only after a termination (a Call-ID reused once its tombstone expired).
    open_calls: set[str] = set()
    answers: defaultdict[str, int] = defaultdict(int)
    for event in events:
        if isinstance(event, CallOffered):
            assert event.call_id not in open_calls
            open_calls.add(event.call_id)
            answers[event.call_id] = 0
        else:
            assert event.call_id in open_calls, event
            if isinstance(event, CallAnswered):
                answers[event.call_id] += 1
                assert answers[event.call_id] == 1
            elif isinstance(event, CallTerminated):
                open_calls.discard(event.call_id)
            else:
                assert isinstance(event, MediaNegotiated)
                assert event.party in ("caller", "callee")
    assert not open_calls
