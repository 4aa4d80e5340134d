"""Dialog tracking: crafted call flows for each rule, and the shared captures replayed through
the tracker with tshark's dissection as the independent reference."""

from __future__ import annotations

import itertools
import socket
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.capture.datagram import UDP, Datagram
from gateway.capture.dialogs import (
    CallAnswered,
    CallOffered,
    CallTerminated,
    DialogEvent,
    DialogTracker,
    MediaNegotiated,
)
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import CaptureFileError, CaptureReader
from gateway.capture.sip import SipError, SipMessage, parse_sip
from gateway.events import EndReason
from tests.capture.tshark_reference import TsharkSip, tshark_sip_captures

CALLER = socket.inet_pton(socket.AF_INET, "192.0.2.10")
CALLEE = socket.inet_pton(socket.AF_INET, "198.51.100.20")


# -- crafting -----------------------------------------------------------------------------------


def sdp(port: int, *formats: int, attrs: tuple[str, ...] = (), addr: str = "192.0.2.10") -> bytes:
    lines = ["v=0", f"o=- 1 1 IN IP4 {addr}", "s=-", f"c=IN IP4 {addr}", "t=0 0"]
    lines += [f"m=audio {port} RTP/AVP {' '.join(map(str, formats))}", *attrs]
    return ("\r\n".join(lines) + "\r\n").encode()


def build(
    start: str,
    *,
    method: str,
    cseq: int,
    from_tag: str,
    to_tag: str,
    call_id: str,
    branch: str,
    body: bytes,
) -> SipMessage:
    headers = [
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}",
        f'From: "Alice" <sip:alice@example.com>;tag={from_tag}',
        "To: <sip:200@example.com>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {method}",
        "Content-Type: application/sdp" if body else "Max-Forwards: 70",
        f"Content-Length: {len(body)}",
    ]
    return parse_sip(("\r\n".join([start, *headers]) + "\r\n\r\n").encode() + body)


def req(
    method: str,
    *,
    cseq: int = 1,
    from_tag: str = "a1",
    to_tag: str = "",
    call_id: str = "call-1",
    branch: str | None = None,
    body: bytes = b"",
) -> SipMessage:
    return build(
        f"{method} sip:200@example.com SIP/2.0",
        method=method,
        cseq=cseq,
        from_tag=from_tag,
        to_tag=to_tag,
        call_id=call_id,
        branch=branch or f"z9hG4bK-{method}-{cseq}",
        body=body,
    )


def resp(
    status: int,
    method: str = "INVITE",
    *,
    cseq: int = 1,
    from_tag: str = "a1",
    to_tag: str = "",
    call_id: str = "call-1",
    body: bytes = b"",
) -> SipMessage:
    return build(
        f"SIP/2.0 {status} Reason",
        method=method,
        cseq=cseq,
        from_tag=from_tag,
        to_tag=to_tag,
        call_id=call_id,
        branch="z9hG4bK-resp",
        body=body,
    )


@dataclass
class Flow:
    """Feeds crafted messages to a tracker at increasing capture times."""

    tracker: DialogTracker = field(default_factory=DialogTracker)
    now: float = 1000.0

    def __call__(self, msg: SipMessage, dt: float = 0.1) -> list[DialogEvent]:
        self.now += dt
        src, dst = (CALLER, CALLEE) if msg.status is None else (CALLEE, CALLER)
        dg = Datagram(self.now, src, 5060, dst, 5060, UDP, b"")
        return self.tracker.handle(msg, dg)

    def expire(self, dt: float) -> list[CallTerminated]:
        self.now += dt
        return self.tracker.expire(self.now)


def kinds(events: list[DialogEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def answered_call(flow: Flow, call_id: str = "call-1") -> None:
    flow(req("INVITE", call_id=call_id, body=sdp(4000, 0, 8)))
    flow(resp(180, call_id=call_id, to_tag="b1"))
    flow(resp(200, call_id=call_id, to_tag="b1", body=sdp(5000, 0, addr="198.51.100.20")))
    flow(req("ACK", call_id=call_id, to_tag="b1"))


# -- crafted flows ------------------------------------------------------------------------------


def test_basic_call() -> None:
    flow = Flow()
    events = flow(req("INVITE", body=sdp(4000, 0, 8)))
    assert kinds(events) == ["CallOffered", "MediaNegotiated"]
    offered, media = events
    assert isinstance(offered, CallOffered)
    assert (offered.call_id, offered.caller_addr, offered.callee_addr) == ("call-1", CALLER, CALLEE)
    assert (offered.request_uri_user, offered.from_user, offered.to_user) == ("200", "alice", "200")
    assert offered.headers["call-id"] == ["call-1"]
    assert isinstance(media, MediaNegotiated)
    assert (media.party, media.fork, media.media[0].port) == ("caller", "", 4000)
    assert flow(resp(100)) == []
    assert flow(resp(180, to_tag="b1")) == []
    events = flow(resp(200, to_tag="b1", body=sdp(5000, 0, addr="198.51.100.20")))
    assert kinds(events) == ["MediaNegotiated", "CallAnswered"]
    assert (events[0].party, events[0].fork, events[0].media[0].port) == ("callee", "b1", 5000)
    assert flow(req("ACK", to_tag="b1")) == []
    assert flow(req("INFO", cseq=2, to_tag="b1")) == []
    assert flow(req("BYE", from_tag="b1", to_tag="a1")) == [CallTerminated("call-1", EndReason.BYE)]
    assert flow(resp(200, "BYE", from_tag="b1", to_tag="a1")) == []
    assert flow.tracker.counters["dialog.after_end"] == 1
    assert flow.tracker.active_calls == 0


def test_retransmitted_invite_is_not_a_new_call() -> None:
    flow = Flow()
    invite = req("INVITE", body=sdp(4000, 0))
    assert kinds(flow(invite)) == ["CallOffered", "MediaNegotiated"]
    assert flow(invite, dt=0.5) == []
    assert flow(invite, dt=1.0) == []
    assert flow.tracker.counters["dialog.invite_retransmission"] == 2
    assert flow.tracker.counters["sdp.repeat"] == 2


def test_challenge_then_authenticated_invite_is_one_call() -> None:
    flow = Flow()
    assert kinds(flow(req("INVITE", body=sdp(4000, 0)))) == ["CallOffered", "MediaNegotiated"]
    assert flow(resp(407, to_tag="proxy")) == []
    assert flow(req("ACK", to_tag="proxy")) == []
    # The user agent re-sends with credentials: a new CSeq and transaction, same Call-ID.
    events = flow(req("INVITE", cseq=2, body=sdp(4000, 0)), dt=20.0)
    assert kinds(events) == ["MediaNegotiated"]  # new offer, not a new call
    assert flow.expire(15.0) == []  # past the 32 s window of the challenge: still up
    assert flow(resp(401, to_tag="proxy")) == []  # the old challenge repeated: stale
    assert flow.tracker.counters["dialog.stale_failure"] == 1
    assert kinds(flow(resp(200, cseq=2, to_tag="b1"))) == ["CallAnswered"]
    assert flow(req("BYE", cseq=3, to_tag="b1")) == [CallTerminated("call-1", EndReason.BYE)]


def test_challenge_without_retry_is_rejected_after_the_window() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(401, to_tag="registrar"))
    flow(req("ACK", to_tag="registrar"))
    assert flow.expire(31.0) == []
    assert flow.expire(2.0) == [CallTerminated("call-1", EndReason.REJECTED)]
    # A late re-send on the ended Call-ID does not open a second call.
    assert flow(req("INVITE", cseq=2), dt=5.0) == []
    assert flow.tracker.counters["dialog.after_end"] == 1


def test_final_failure_is_rejected_and_a_bye_after_it_confirms() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(180, to_tag="b1"))
    assert flow(resp(603, to_tag="b1")) == []
    assert flow(req("BYE", cseq=2, to_tag="b1")) == [CallTerminated("call-1", EndReason.REJECTED)]


def test_failure_then_end_of_capture_is_rejected() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(486, to_tag="b1"))
    flow(req("INVITE", call_id="call-2"))
    assert sorted(flow.tracker.end_all(), key=lambda e: e.call_id) == [
        CallTerminated("call-1", EndReason.REJECTED),
        CallTerminated("call-2", EndReason.CAPTURE_END),
    ]
    assert flow.tracker.active_calls == 0


def test_cancel_and_487() -> None:
    flow = Flow()
    flow(req("INVITE", body=sdp(4000, 0)))
    flow(resp(180, to_tag="b1"))
    assert flow(req("CANCEL", branch="z9hG4bK-INVITE-1")) == []
    assert flow(resp(200, "CANCEL", to_tag="b1")) == []
    assert flow(resp(487, to_tag="b1")) == []
    assert flow(req("ACK", to_tag="b1")) == []
    assert flow.expire(40.0) == [CallTerminated("call-1", EndReason.CANCELLED)]


def test_487_alone_and_a_failure_after_cancel_are_cancelled() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(487, to_tag="b1"))
    flow(req("INVITE", call_id="call-2"))
    flow(req("CANCEL", call_id="call-2"))
    flow(resp(408, call_id="call-2", to_tag="b2"))  # the callee timed out first
    assert sorted(flow.tracker.end_all(), key=lambda e: e.call_id) == [
        CallTerminated("call-1", EndReason.CANCELLED),
        CallTerminated("call-2", EndReason.CANCELLED),
    ]


def test_cancel_crossing_the_answer_keeps_the_call() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(req("CANCEL"))
    assert kinds(flow(resp(200, to_tag="b1"))) == ["CallAnswered"]
    assert flow(resp(481, "CANCEL", to_tag="b1")) == []
    assert flow.expire(60.0) == []
    assert flow(req("BYE", cseq=2, to_tag="b1")) == [CallTerminated("call-1", EndReason.BYE)]


def test_cancelled_or_failed_reinvite_keeps_the_call() -> None:
    flow = Flow()
    answered_call(flow)
    reinvite = req("INVITE", cseq=2, to_tag="b1", body=sdp(4000, 0, attrs=("a=sendonly",)))
    assert kinds(flow(reinvite)) == ["MediaNegotiated"]
    assert flow(req("CANCEL", cseq=2, to_tag="b1")) == []
    assert flow(resp(487, cseq=2, to_tag="b1")) == []
    assert flow(resp(488, cseq=3, to_tag="b1")) == []
    assert flow.expire(60.0) == []
    assert flow.tracker.counters["dialog.cancel_after_answer"] == 1
    assert flow.tracker.counters["dialog.reinvite_failed"] == 2
    assert flow.tracker.active_calls == 1


def test_forked_early_media_then_answer_from_one_fork() -> None:
    flow = Flow()
    flow(req("INVITE", body=sdp(4000, 0, 8)))
    first = flow(resp(183, to_tag="f1", body=sdp(6000, 0, addr="198.51.100.21")))
    second = flow(resp(183, to_tag="f2", body=sdp(7000, 8, addr="198.51.100.22")))
    assert [(e.party, e.fork, e.media[0].port) for e in first + second] == [
        ("callee", "f1", 6000),
        ("callee", "f2", 7000),
    ]
    # A reliable provisional response is acknowledged; PRACK may carry SDP too.
    prack = flow(req("PRACK", cseq=2, to_tag="f2", body=sdp(4000, 8)))
    assert [(e.party, e.fork) for e in prack] == [("caller", "f2")]
    assert flow(resp(200, "PRACK", cseq=2, to_tag="f2")) == []
    events = flow(resp(200, to_tag="f2", body=sdp(7000, 8, addr="198.51.100.22")))
    assert kinds(events) == ["MediaNegotiated", "CallAnswered"]
    assert events[0].fork == "f2"
    # The other fork's late 200 is a second answer, not a second call.
    assert kinds(flow(resp(200, to_tag="f1"))) == []


def test_failure_of_one_fork_while_another_rings() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(180, to_tag="f1"))
    flow(resp(180, to_tag="f2"))
    assert flow(resp(486, to_tag="f1")) == []
    assert flow.tracker.counters["dialog.fork_failed"] == 1
    assert flow.expire(60.0) == []
    assert kinds(flow(resp(200, to_tag="f2"))) == ["CallAnswered"]


def test_failure_then_a_new_fork_rings() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(404, to_tag="f1"))
    flow(resp(180, to_tag="f2"), dt=5.0)  # a later branch of the proxy rings
    assert flow.expire(60.0) == []
    assert flow.tracker.active_calls == 1


def test_serial_forking_proxy_cancels_one_phone_and_rings_the_next() -> None:
    flow = Flow()
    flow(req("INVITE", branch="z9hG4bK-to-A"))
    flow(resp(180, to_tag="phone-a"))
    flow(req("CANCEL", branch="z9hG4bK-to-A"), dt=15.0)
    flow(resp(487, to_tag="phone-a"))
    # Same CSeq, new transaction: the proxy now tries phone B.
    assert flow(req("INVITE", branch="z9hG4bK-to-B")) == []
    flow(resp(180, to_tag="phone-b"))
    assert flow.expire(40.0) == []
    assert kinds(flow(resp(200, to_tag="phone-b"))) == ["CallAnswered"]


def test_update_from_either_side() -> None:
    flow = Flow()
    answered_call(flow)
    from_caller = flow(req("UPDATE", cseq=2, to_tag="b1", body=sdp(4002, 0)))
    answer = flow(resp(200, "UPDATE", cseq=2, to_tag="b1", body=sdp(5002, 0)))
    from_callee = flow(req("UPDATE", cseq=7, from_tag="b1", to_tag="a1", body=sdp(5004, 0)))
    answer_back = flow(resp(200, "UPDATE", cseq=7, from_tag="b1", to_tag="a1", body=sdp(4004, 0)))
    assert [
        (e.party, e.fork, e.media[0].port) for e in from_caller + answer + from_callee + answer_back
    ] == [
        ("caller", "b1", 4002),
        ("callee", "b1", 5002),
        ("callee", "b1", 5004),
        ("caller", "b1", 4004),
    ]


def test_late_offer_answered_in_ack() -> None:
    flow = Flow()
    assert kinds(flow(req("INVITE"))) == ["CallOffered"]
    events = flow(resp(200, to_tag="b1", body=sdp(5000, 0, 8)))
    assert [(type(e).__name__, getattr(e, "party", None)) for e in events] == [
        ("MediaNegotiated", "callee"),
        ("CallAnswered", None),
    ]
    ack = flow(req("ACK", to_tag="b1", body=sdp(4000, 8)))
    assert [(e.party, e.fork, e.media[0].formats) for e in ack] == [("caller", "b1", [8])]


def test_hold_and_codec_change_by_reinvite() -> None:
    flow = Flow()
    answered_call(flow)
    hold = flow(
        req("INVITE", cseq=5, from_tag="b1", to_tag="a1", body=sdp(5000, 0, attrs=("a=sendonly",)))
    )
    held = flow(
        resp(200, cseq=5, from_tag="b1", to_tag="a1", body=sdp(4000, 0, attrs=("a=recvonly",)))
    )
    assert [(e.party, e.media[0].direction) for e in hold + held] == [
        ("callee", "sendonly"),
        ("caller", "recvonly"),
    ]
    old_style = flow(req("INVITE", cseq=2, to_tag="b1", body=sdp(4000, 0, addr="0.0.0.0")))
    assert (old_style[0].media[0].addr, old_style[0].media[0].direction) == (None, "sendonly")
    change = flow(req("INVITE", cseq=3, to_tag="b1", body=sdp(4010, 9)))
    assert change[0].media[0].codecs[9].encoding == "G722"
    assert change[0].media[0].port == 4010


def test_b2bua_leg_with_the_same_call_id() -> None:
    """A B2BUA that keeps the Call-ID but uses its own tags on the outgoing leg."""
    flow = Flow()
    flow(req("INVITE", body=sdp(4000, 0)))
    leg_b = flow(req("INVITE", from_tag="sbc-1", branch="z9hG4bK-leg-b", body=sdp(8000, 0)))
    assert [(e.party, e.fork) for e in leg_b] == [("caller", "")]
    answer_b = flow(resp(200, from_tag="sbc-1", to_tag="phone", body=sdp(5000, 0)))
    assert [(type(e).__name__, getattr(e, "party", None)) for e in answer_b] == [
        ("MediaNegotiated", "callee"),
        ("CallAnswered", None),
    ]
    hold = flow(req("INVITE", cseq=9, from_tag="phone", to_tag="sbc-1", body=sdp(5000, 0)))
    assert [(e.party, e.fork) for e in hold] == [("callee", "phone")]


def test_unanswered_call_times_out() -> None:
    flow = Flow()
    flow(req("INVITE"))
    flow(resp(180, to_tag="b1"))
    assert flow.expire(179.0) == []
    assert flow.expire(2.0) == [CallTerminated("call-1", EndReason.TIMEOUT)]


def test_answered_call_times_out_unless_media_touches_it() -> None:
    flow = Flow(DialogTracker(answered_timeout=600.0))
    answered_call(flow)
    assert flow.tracker.touch("call-1", flow.now + 500.0)
    assert not flow.tracker.touch("no-such-call", flow.now)
    assert flow.expire(1000.0) == []
    assert flow.expire(150.0) == [CallTerminated("call-1", EndReason.TIMEOUT)]
    assert not flow.tracker.touch("call-1", flow.now)


def test_overflow_expires_oldest_unanswered_first() -> None:
    flow = Flow(DialogTracker(max_calls=3))
    answered_call(flow, "call-1")
    flow(req("INVITE", call_id="call-2"))
    flow(req("INVITE", call_id="call-3"))
    events = flow(req("INVITE", call_id="call-4"))
    assert events[0] == CallTerminated("call-2", EndReason.TIMEOUT)
    assert kinds(events) == ["CallTerminated", "CallOffered"]
    assert flow.tracker.active_calls == 3
    flow(resp(200, call_id="call-3", to_tag="x"))
    flow(resp(200, call_id="call-4", to_tag="x"))
    # Everything answered: the oldest call goes.
    events = flow(req("INVITE", call_id="call-5"))
    assert events[0] == CallTerminated("call-1", EndReason.TIMEOUT)
    assert flow.tracker.counters["dialog.overflow"] == 2
    assert flow.tracker.active_calls == 3


def test_requests_outside_calls_are_counted() -> None:
    flow = Flow()
    for method in ("REGISTER", "SUBSCRIBE", "OPTIONS", "MESSAGE", "NOTIFY", "PUBLISH", "FOO"):
        assert flow(req(method, call_id=f"other-{method}")) == []
    assert flow(resp(200, "REGISTER", call_id="other-REGISTER", to_tag="r")) == []
    assert flow(req("BYE", call_id="started-before-capture", to_tag="x")) == []
    assert flow(req("INVITE", call_id="started-before-capture", to_tag="x", cseq=5)) == []
    counters = flow.tracker.counters
    for key in ("register", "subscribe", "options", "message", "notify", "publish", "other"):
        assert counters[f"dialog.no_call.{key}"] == 1
    assert counters["dialog.no_call.response"] == 1
    assert counters["dialog.no_call.bye"] == 1
    assert counters["dialog.no_call.reinvite"] == 1
    assert flow.tracker.active_calls == 0


def test_malformed_sdp_is_counted_not_raised() -> None:
    flow = Flow()
    assert kinds(flow(req("INVITE", body=b"this is not sdp"))) == ["CallOffered"]
    assert flow.tracker.counters["sdp.malformed"] == 1
    events = flow(resp(200, to_tag="b1", body=sdp(5000, 0) + b"a=ptime:x\r\n"))
    assert kinds(events) == ["MediaNegotiated", "CallAnswered"]
    assert flow.tracker.counters["sdp.line_skipped"] == 1


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="max_calls"):
        DialogTracker(max_calls=0)


# -- the shared captures ------------------------------------------------------------------------


@dataclass
class Replay:
    tracker: DialogTracker
    events: list[DialogEvent]
    by_message: list[list[DialogEvent]]  # events caused by each message (expiries excluded)


def replay(datagrams: list[Datagram]) -> Replay:
    """The tracker over a capture's SIP messages, expiring by capture time as it goes."""
    tracker = DialogTracker()
    events: list[DialogEvent] = []
    by_message = []
    for dg in datagrams:
        events += tracker.expire(dg.ts)
        try:
            msg = parse_sip(dg.payload)
        except SipError:
            by_message.append([])
            continue
        caused = tracker.handle(msg, dg)
        by_message.append(caused)
        events += caused
    events += tracker.end_all()
    return Replay(tracker, events, by_message)


def _calls(ref_messages: list[TsharkSip]) -> dict[str, list[TsharkSip]]:
    calls: dict[str, list[TsharkSip]] = defaultdict(list)
    for ref in ref_messages:
        calls[ref.first("sip.Call-ID")].append(ref)
    return {
        cid: msgs
        for cid, msgs in calls.items()
        if any(m.first("sip.Method") == "INVITE" for m in msgs)
    }


def expected_outcome(messages: list[TsharkSip], tracker: DialogTracker) -> EndReason:
    """How a call ends, read from tshark's fields with plain rules (no dialog state)."""

    def is_invite_response(m: TsharkSip, low: int, high: int) -> bool:
        status = m.first("sip.Status-Code")
        return bool(status) and low <= int(status) < high and m.first("sip.CSeq.method") == "INVITE"

    answered_at = next((m.dg.ts for m in messages if is_invite_response(m, 200, 300)), None)
    for before, after in itertools.pairwise(messages):
        up = answered_at is not None and before.dg.ts >= answered_at
        limit = tracker.answered_timeout if up else tracker.unanswered_timeout
        if after.dg.ts - before.dg.ts > limit:
            return EndReason.TIMEOUT
    methods = {m.first("sip.Method") for m in messages}
    if answered_at is not None:
        return EndReason.BYE if "BYE" in methods else EndReason.CAPTURE_END
    if "CANCEL" in methods or any(m.first("sip.Status-Code") == "487" for m in messages):
        return EndReason.CANCELLED
    if any(is_invite_response(m, 300, 700) for m in messages):
        return EndReason.REJECTED
    return EndReason.BYE if "BYE" in methods else EndReason.CAPTURE_END


@pytest.fixture(scope="module")
def replays(tshark: str, pcaps_dir: Path) -> dict[str, tuple[list[TsharkSip], Replay]]:
    return {
        name: (messages, replay([m.dg for m in messages]))
        for name, messages in tshark_sip_captures(tshark, pcaps_dir).items()
    }


def test_calls_offered_are_the_call_ids_with_an_invite(replays: dict) -> None:
    total = 0
    for name, (messages, run) in replays.items():
        offered = [e.call_id for e in run.events if isinstance(e, CallOffered)]
        assert len(offered) == len(set(offered)), name
        assert set(offered) == set(_calls(messages)), name
        total += len(offered)
    assert total > 1350


def test_outcomes_match_tshark(replays: dict) -> None:
    checked = Counter()
    for name, (messages, run) in replays.items():
        ended = {e.call_id: e.reason for e in run.events if isinstance(e, CallTerminated)}
        for call_id, call_messages in _calls(messages).items():
            expected = expected_outcome(call_messages, run.tracker)
            assert ended[call_id] is expected, f"{name}: {ended[call_id]} != {expected}"
            checked[expected] += 1
        answered = {e.call_id for e in run.events if isinstance(e, CallAnswered)}
        assert answered <= set(ended), name
    # Every ending SIP can cause occurs somewhere in the captures.
    assert set(checked) == {
        EndReason.BYE,
        EndReason.CANCELLED,
        EndReason.REJECTED,
        EndReason.TIMEOUT,
        EndReason.CAPTURE_END,
    }


def _tshark_media(line: str) -> tuple[str, int, str, list[int]]:
    """An m= line as tshark shows it, in MediaDescription terms."""
    kind, port, proto, *formats = line.split()
    rtp_formats = [int(f) for f in formats] if "RTP" in proto.upper() else []
    return kind, int(port.partition("/")[0]), proto, rtp_formats


def _negotiating(ref: TsharkSip) -> bool:
    method = ref.first("sip.CSeq.method")
    status = ref.first("sip.Status-Code")
    return method in {"INVITE", "ACK", "PRACK", "UPDATE"} and (not status or int(status) < 300)


def test_every_sdp_of_a_call_is_reported(replays: dict) -> None:
    """Each negotiating SDP tshark sees on a live call is reported when first seen."""
    reported = 0
    for name, (messages, run) in replays.items():
        live: set[str] = set()
        seen: defaultdict[str, set[tuple[str, ...]]] = defaultdict(set)
        for ref, caused in zip(messages, run.by_message, strict=True):
            call_id = ref.first("sip.Call-ID")
            live |= {e.call_id for e in caused if isinstance(e, CallOffered)}
            media_lines = tuple(ref.fields["sdp.media"])
            negotiated = [e for e in caused if isinstance(e, MediaNegotiated)]
            for event in negotiated:
                mine = tuple((m.kind, m.port, m.proto, m.formats) for m in event.media)
                assert mine == tuple(map(_tshark_media, media_lines)), name
            if media_lines and call_id in live and _negotiating(ref):
                assert negotiated or media_lines in seen[call_id], f"{name} at {ref.dg.ts}"
                seen[call_id].add(media_lines)
                reported += len(negotiated)
            live -= {e.call_id for e in caused if isinstance(e, CallTerminated)}
    assert reported > 1500


def test_directions_follow_the_sdp_attributes(replays: dict) -> None:
    """Hold and one-way media: sendonly/recvonly in tshark's view reach MediaNegotiated."""
    found = Counter()
    for _name, (messages, run) in replays.items():
        for ref, caused in zip(messages, run.by_message, strict=True):
            attrs = [a for a in ref.fields["sdp.media_attr"] if a in ("sendonly", "recvonly")]
            for event in caused:
                if isinstance(event, MediaNegotiated) and len(event.media) == 1 and len(attrs) == 1:
                    assert event.media[0].direction == attrs[0]
                    found[attrs[0]] += 1
    assert found["sendonly"] and found["recvonly"]


def _replay_of(replays: dict, name: str) -> tuple[list[TsharkSip], Replay]:
    if name not in replays:
        pytest.fail(f"{name} is missing from the shared captures or has no SIP over UDP")
    return replays[name]


def _endings(run: Replay) -> list[EndReason]:
    return [e.reason for e in run.events if isinstance(e, CallTerminated)]


def test_two_sequential_calls_second_still_up(replays: dict) -> None:
    messages, run = _replay_of(replays, "sip-rtp-g711.pcap")
    order = list(dict.fromkeys(m.first("sip.Call-ID") for m in messages))
    ended = {e.call_id: e.reason for e in run.events if isinstance(e, CallTerminated)}
    assert [ended[c] for c in order] == [EndReason.BYE, EndReason.CAPTURE_END]


def test_declined_call(replays: dict) -> None:
    messages, run = _replay_of(replays, "SIP_DTMF2.cap")
    declined = {m.first("sip.Call-ID") for m in messages if m.first("sip.Status-Code") == "603"}
    rejected = {
        e.call_id
        for e in run.events
        if isinstance(e, CallTerminated) and e.reason is EndReason.REJECTED
    }
    assert rejected == declined and len(rejected) == 1


def test_cancels_of_overlapping_invites_do_not_end_the_call(replays: dict) -> None:
    messages, run = _replay_of(replays, "DTMFsipinfo.pcap")
    cancels = sum(m.first("sip.Method") == "CANCEL" for m in messages)
    reinvites = sum(
        m.first("sip.Method") == "INVITE" and bool(m.first("sip.to.tag")) for m in messages
    )
    assert cancels > 0 and reinvites > 0
    assert run.tracker.counters["dialog.cancel_after_answer"] == cancels
    assert _endings(run) == [EndReason.CAPTURE_END]
    negotiated = [e for e in run.events if isinstance(e, MediaNegotiated)]
    assert {e.party for e in negotiated} == {"caller", "callee"}  # re-INVITEs come from both


@pytest.mark.parametrize("name", ["register-invite-reinvite-bye.pcap", "codec-negotiation.pcap"])
def test_reinvite_changes_the_codec(replays: dict, name: str) -> None:
    messages, run = _replay_of(replays, name)
    answers = [
        (ref, caused)
        for ref, caused in zip(messages, run.by_message, strict=True)
        if ref.first("sip.Status-Code") == "200" and ref.first("sip.CSeq.method") == "INVITE"
    ]
    assert len(answers) == 2  # the answer to the INVITE, then to the re-INVITE
    chosen = []
    for ref, caused in answers:
        (event,) = [e for e in caused if isinstance(e, MediaNegotiated)]
        media = event.media[0]
        codec = media.codecs[media.formats[0]]
        assert codec.encoding == ref.fields["sdp.mime.type"][0].upper()
        chosen.append(codec.encoding)
    assert chosen[0] != chosen[1]
    assert _endings(run) == [EndReason.BYE]


def test_reliable_provisional_response_with_prack(replays: dict) -> None:
    messages, run = _replay_of(replays, "rtp-protocol.pcap")
    assert any(m.first("sip.Method") == "PRACK" for m in messages)
    assert kinds(run.events) == [
        "CallOffered",
        "MediaNegotiated",
        "MediaNegotiated",
        "CallAnswered",
        "CallTerminated",
    ]
    assert _endings(run) == [EndReason.BYE]
    assert [e.party for e in run.events if isinstance(e, MediaNegotiated)] == ["caller", "callee"]


def test_load_run_with_rejections(replays: dict) -> None:
    messages, run = _replay_of(replays, "sipp-branch-scenario.pcapng")
    offered = [e for e in run.events if isinstance(e, CallOffered)]
    assert len(offered) == len(_calls(messages)) == 1334
    forbidden = {m.first("sip.Call-ID") for m in messages if m.first("sip.Status-Code") == "403"}
    ended = Counter(_endings(run))
    assert ended[EndReason.REJECTED] == len(forbidden)
    assert sum(ended.values()) == 1334
    assert run.tracker.counters["dialog.no_call.register"] == 1334


def test_remote_mirror_hold(replays: dict) -> None:
    """ERSPAN/GRE feed: hold by re-INVITE with sendonly answered recvonly."""
    messages, run = _replay_of(replays, "erspan_sip_ipv4_udp.pcapng")
    directions = Counter(
        m.direction for e in run.events if isinstance(e, MediaNegotiated) for m in e.media
    )
    assert directions["sendonly"] and directions["recvonly"]
    assert len([e for e in run.events if isinstance(e, CallOffered)]) == len(_calls(messages))


# -- the packet layer feeds the tracker the same messages ---------------------------------------


def test_packet_layer_gives_the_same_events(pcaps_dir: Path, replays: dict) -> None:
    """Datagrams from CaptureReader/PacketDecoder produce the events tshark's messages do."""
    compared: set[str] = set()
    for name, (_messages, reference) in replays.items():
        path = next(pcaps_dir.rglob(name))
        try:
            reader = CaptureReader(path)
        except CaptureFileError:
            continue  # the NetMon file of PROTOS cases: not pcap, declined by the reader
        decoder = PacketDecoder()
        datagrams = [dg for frame in reader for dg in decoder.decode(frame) if dg.proto == UDP]
        ours = replay(datagrams)
        assert _summary(ours.events) == _summary(reference.events), name
        compared.add(name)
    # Including the GRE-mirrored feed and fragmented SIP over IPv6.
    assert {"erspan_sip_ipv4_udp.pcapng", "ipv6frag.pcap"} <= compared
    assert len(compared) >= 30


def _summary(events: list[DialogEvent]) -> list[tuple]:
    out: list[tuple] = []
    for e in events:
        if isinstance(e, MediaNegotiated):
            out.append(
                ("media", e.call_id, e.party, e.fork, [(m.port, m.formats) for m in e.media])
            )
        elif isinstance(e, CallTerminated):
            out.append(("end", e.call_id, e.reason))
        else:
            out.append((type(e).__name__, e.call_id))
    return out
