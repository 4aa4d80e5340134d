"""The capture stage: frames in, identity-free call events out.

This is where SIP dialogs, SDP, RTP streams and the privacy decisions meet. A call's policy is
decided when its first INVITE is seen; the media of a dropped call is recognised by address
and counted, never parsed or decoded; the media of an analysed call is trimmed before decoding.
Everything that leaves (``gateway.events``) carries only a random reference.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field, replace

import numpy as np

from gateway.capture.datagram import UDP, Datagram
from gateway.capture.dialogs import (
    CallAnswered,
    CallOffered,
    CallTerminated,
    DialogTracker,
    MediaNegotiated,
)
from gateway.capture.mediastream import MediaStream
from gateway.capture.packets import PacketDecoder
from gateway.capture.pcapfile import Frame
from gateway.capture.policy import PolicyDecider
from gateway.capture.queues import queue_of
from gateway.capture.roles import RoleMap
from gateway.capture.rtp import RtpError, is_rtcp, parse_rtp
from gateway.capture.sdp import Codec
from gateway.capture.sip import SipError, parse_sip
from gateway.config import Config
from gateway.events import (
    AudioChunk,
    CallEnded,
    CallRef,
    CallStarted,
    CaptureEvent,
    DirectionStats,
    EndReason,
    Policy,
    Role,
    Undecodable,
)
from gateway.seal.sampling_key import SamplingKey

Endpoint = tuple[bytes, int]
CALLER, CALLEE = "caller", "callee"
_OTHER = {CALLER: CALLEE, CALLEE: CALLER}
_HOLD_ADDRESSES = (bytes(4), bytes(16))
_SIP_METHOD_START = (
    b"INVITE ", b"ACK ", b"BYE ", b"CANCEL ", b"OPTIONS ", b"REGISTER ", b"PRACK ",
    b"UPDATE ", b"INFO ", b"SUBSCRIBE ", b"NOTIFY ", b"REFER ", b"MESSAGE ", b"PUBLISH ",
    b"SIP/2.0 ",
)  # fmt: skip
_EXPIRE_EVERY_S = 1.0
_TOUCH_EVERY_S = 5.0
_FLOW_SWITCH_S = 1.0
_LATE_MEDIA_S = 30.0
_MAX_TRANSIT_STEP_S = 5.0
_MAX_ENDED_ENDPOINTS = 8192
_MAX_UNMATCHED_FLOWS = 4096


@dataclass(slots=True)
class _Direction:
    """Media sent by one party of a call."""

    role: Role
    packets: int = 0
    rtcp: int = 0
    offset: int = 0  # samples handed on so far
    stream: MediaStream | None = None
    stale: bool = False  # renegotiated: rebuild the stream with the new codecs
    elapsed: float = 0.0  # media seconds covered by replaced streams (trimmed or decoded)
    flow: tuple[bytes, int, bytes, int] | None = None  # the packet flow being followed
    flow_seen: float = 0.0
    competing: int = 0  # packets of other flows ignored while this one was live
    jitter: float = 0.0  # RFC 3550 interarrival jitter, seconds
    transit: float | None = None  # arrival minus RTP time of the previous packet, seconds
    jitter_ssrc: int = -1
    done: list[DirectionStats] = field(default_factory=list)  # stats of replaced streams


@dataclass(slots=True)
class _Call:
    call_id: str
    ref: CallRef
    policy: Policy
    directions: dict[str, _Direction]
    codecs: dict[str, dict[int, Codec]] = field(default_factory=lambda: {CALLER: {}, CALLEE: {}})
    announced: dict[tuple[str, str], dict[Endpoint, bool]] = field(default_factory=dict)
    encodings: set[str] = field(default_factory=set)
    answered: bool = False
    undecodable: Undecodable | None = None
    undecodable_codec: str = ""
    last_touch: float = 0.0


@dataclass(slots=True)
class CaptureReport:
    """What an installer needs to judge a mirror port: counts only, never an identity."""

    frames: int = 0
    datagrams: int = 0
    sip_messages: int = 0
    sip_malformed: int = 0
    calls: int = 0
    answered: int = 0
    policies: Counter[str] = field(default_factory=Counter)
    queues: Counter[str] = field(default_factory=Counter)  # configured labels, "none" for the site
    end_reasons: Counter[str] = field(default_factory=Counter)
    undecodable: Counter[str] = field(default_factory=Counter)
    codecs: Counter[str] = field(default_factory=Counter)
    one_way_audio: int = 0
    no_media: int = 0
    rtp_packets_matched: int = 0
    rtp_packets_dropped_unsampled: int = 0
    rtcp_packets: int = 0
    competing_packets: int = 0
    late_media_packets: int = 0
    unknown_payload_type: int = 0
    non_audio_packets: int = 0
    rtp_malformed: int = 0
    unmatched_flows: int = 0
    unmatched_packets: int = 0
    analysed_directions: int = 0
    lost: int = 0
    expected: int = 0
    duplicates: int = 0
    max_jitter_ms: float = 0.0
    jitter_directions: int = 0
    mean_jitter_ms: float = 0.0
    decoded_seconds: float = 0.0
    trimmed_seconds: float = 0.0
    concealed_seconds: float = 0.0
    telephone_events: int = 0
    packet_layer: Counter[str] = field(default_factory=Counter)
    dialog_layer: Counter[str] = field(default_factory=Counter)
    truncated: bool = False

    @property
    def sampling_rate(self) -> float | None:
        """Analysed share of the calls that the sampling decided (contract calls excluded)."""
        decided = self.policies[Policy.ANALYTICS.value] + self.policies[Policy.DROP.value]
        return self.policies[Policy.ANALYTICS.value] / decided if decided else None


class CaptureSession:
    def __init__(self, config: Config, sampling_key: SamplingKey) -> None:
        capture = config.capture
        self._sip_ports = frozenset(capture.sip_ports)
        self._trim_seconds = config.privacy.trim_seconds
        self._jitter_depth = capture.jitter_depth
        self._decoder = PacketDecoder()
        self._dialogs = DialogTracker(
            answered_timeout=capture.answered_timeout_s,
            unanswered_timeout=capture.unanswered_timeout_s,
            max_calls=capture.max_calls,
        )
        self._policy = PolicyDecider(config.privacy, config.contract, config.queues, sampling_key)
        self._roles = RoleMap(config.roles)
        self._queues = config.queues
        self._calls: dict[str, _Call] = {}
        # media address -> (call, party that announced it in SDP, whether it carries audio)
        self._media: dict[Endpoint, tuple[_Call, str, bool]] = {}
        # addresses of calls that ended recently -> end time: late media is counted, not lost
        self._ended_media: OrderedDict[Endpoint, float] = OrderedDict()
        self._unmatched: dict[tuple[bytes, int, bytes, int], int] = {}
        self._next_expiry = 0.0
        self._now = 0.0
        self.report = CaptureReport()
        self.media_ports_changed = False

    def use_sampling_key(self, key: SamplingKey) -> None:
        """Sample calls set up from now on under ``key`` (the daemon reloads it on SIGHUP)."""
        self._policy.use_key(key)

    # -- input -------------------------------------------------------------------------------

    def feed(self, frame: Frame) -> list[CaptureEvent]:
        self.report.frames += 1
        out: list[CaptureEvent] = []
        for dg in self._decoder.decode(frame):
            self.report.datagrams += 1
            self._now = dg.ts
            if dg.proto == UDP:
                if dg.sport == dg.dport and dg.src == dg.dst:
                    # a host talking to itself (media-server wake-ups): nobody's audio
                    self._on_unmatched(dg.src, dg.sport, dg.dst, dg.dport, dg.payload)
                    continue
                hit = self._media.get((dg.dst, dg.dport))
                if hit is not None:
                    call, announcer, audio = hit
                    self._on_media(call, _OTHER[announcer], audio, dg, out)
                    continue
                hit = self._media.get((dg.src, dg.sport))
                if hit is not None:  # symmetric RTP: a party sends from where it receives
                    call, announcer, audio = hit
                    self._on_media(call, announcer, audio, dg, out)
                    continue
                ended = self._ended_media
                if (dg.dst, dg.dport) in ended or (dg.src, dg.sport) in ended:
                    if _looks_like_rtp(dg.payload):
                        self.report.late_media_packets += 1
                    continue
                if (
                    dg.dport in self._sip_ports
                    or dg.sport in self._sip_ports
                    or (dg.payload.startswith(_SIP_METHOD_START))
                ):
                    self._on_sip(dg, out)
                else:
                    self._on_unmatched(dg.src, dg.sport, dg.dst, dg.dport, dg.payload)
            else:  # TCP: the packet layer hands on whole SIP messages only
                self._on_sip(dg, out)
        if self._now >= self._next_expiry:
            self.tick(self._now, out)
        return out

    def tick(self, now: float, out: list[CaptureEvent]) -> None:
        """Close calls that timed out; call it on idle live sources too."""
        self._next_expiry = now + _EXPIRE_EVERY_S
        self._decoder.expire(now)
        ended = self._ended_media
        while ended and next(iter(ended.values())) < now - _LATE_MEDIA_S:
            ended.popitem(last=False)
        for event in self._dialogs.expire(now):
            self._on_dialog_event(event, out)

    def finish(self) -> list[CaptureEvent]:
        """End of capture: every call still up ends with CAPTURE_END."""
        out: list[CaptureEvent] = []
        self._decoder.flush()  # counts fragments and TCP messages the capture cut short
        for event in self._dialogs.end_all():
            self._on_dialog_event(event, out)
        self.report.packet_layer.update(self._decoder.counters)
        self.report.dialog_layer.update(self._dialogs.counters)
        self.report.unmatched_flows = len(self._unmatched)
        return out

    def media_ports(self) -> set[int]:
        """Ports whose media must reach userspace: those of analysed and contract calls."""
        self.media_ports_changed = False
        return {
            port
            for (_, port), (call, _, _) in self._media.items()
            if call.policy is not Policy.DROP
        }

    # -- SIP ---------------------------------------------------------------------------------

    def _on_sip(self, dg: Datagram, out: list[CaptureEvent]) -> None:
        try:
            msg = parse_sip(dg.payload)
        except SipError:
            self.report.sip_malformed += 1
            return
        self.report.sip_messages += 1
        for event in self._dialogs.handle(msg, dg):
            self._on_dialog_event(event, out)

    def _on_dialog_event(self, event: object, out: list[CaptureEvent]) -> None:
        if isinstance(event, CallOffered):
            self._on_offered(event, out)
            return
        call = self._calls.get(event.call_id)  # type: ignore[attr-defined]
        if call is None:
            return
        if isinstance(event, MediaNegotiated):
            self._on_negotiated(call, event)
        elif isinstance(event, CallAnswered):
            call.answered = True
            self.report.answered += 1
        elif isinstance(event, CallTerminated):
            self._on_terminated(call, event.reason, out)

    def _on_offered(self, event: CallOffered, out: list[CaptureEvent]) -> None:
        if event.call_id in self._calls:
            return
        policy = self._policy.decide(
            event.call_id, [event.request_uri_user, event.to_user], event.headers
        )
        caller_role, callee_role = self._roles.assign([event.caller_addr], [event.callee_addr])
        call = _Call(
            call_id=event.call_id,
            ref=CallRef.new(),
            policy=policy,
            directions={CALLER: _Direction(caller_role), CALLEE: _Direction(callee_role)},
            last_touch=self._now,
        )
        self._calls[event.call_id] = call
        self.report.calls += 1
        self.report.policies[policy.value] += 1
        roles = frozenset((caller_role, callee_role))
        queue = queue_of(event.headers, self._queues)
        self.report.queues[queue or "none"] += 1
        out.append(CallStarted(call.ref, policy, roles, queue))

    def _on_negotiated(self, call: _Call, event: MediaNegotiated) -> None:
        announced: dict[Endpoint, bool] = {}  # endpoint -> carries audio
        for media in event.media:
            audio = media.kind == "audio" and not media.proto.lower().startswith("udptl")
            if audio:
                if media.encrypted:
                    call.undecodable = Undecodable.SRTP
                call.codecs[event.party].update(media.codecs)
                call.encodings.update(
                    c.encoding for c in media.codecs.values() if c.encoding not in _NON_AUDIO
                )
            if media.port == 0 or media.addr is None or media.addr in _HOLD_ADDRESSES:
                continue
            announced[(media.addr, media.port)] = audio
            if media.rtcp_port is not None:
                announced.setdefault((media.addr, media.rtcp_port), audio)
        # a new SDP from a party replaces what that party (on that fork) announced before
        key = (event.party, event.fork)
        for endpoint in call.announced.get(key, {}).keys() - announced.keys():
            if self._media.get(endpoint, _NO_HIT)[0] is call:
                del self._media[endpoint]
        for endpoint, audio in announced.items():
            self._media[endpoint] = (call, event.party, audio)
        call.announced[key] = announced
        for direction in call.directions.values():
            direction.stale = direction.stream is not None
        if call.policy is not Policy.DROP:
            self.media_ports_changed = True

    def _on_terminated(self, call: _Call, reason: EndReason, out: list[CaptureEvent]) -> None:
        del self._calls[call.call_id]
        for endpoints in call.announced.values():
            for endpoint in endpoints:
                if self._media.get(endpoint, _NO_HIT)[0] is call:
                    del self._media[endpoint]
                    self._ended_media[endpoint] = self._now
                    self._ended_media.move_to_end(endpoint)
        while len(self._ended_media) > _MAX_ENDED_ENDPOINTS:
            self._ended_media.popitem(last=False)
        stats = []
        for direction in call.directions.values():
            if direction.stream is not None:
                self._retire_stream(call, direction, out)
            stats.append(_sum_stats(direction))
        undecodable = call.undecodable
        sent = [d.packets for d in call.directions.values()]
        if call.answered and not any(sent):
            self.report.no_media += 1
            undecodable = undecodable or Undecodable.NO_MEDIA
        elif call.answered and not all(sent):
            self.report.one_way_audio += 1
        if undecodable is not None:
            self.report.undecodable[_undecodable_label(call, undecodable)] += 1
        self.report.codecs.update(call.encodings)
        self.report.end_reasons[reason.value] += 1
        if call.policy is not Policy.DROP:
            self.media_ports_changed = True
            self._account(stats)
            self._account_jitter(call)
        out.append(CallEnded(call.ref, reason, undecodable, tuple(stats)))

    # -- media -------------------------------------------------------------------------------

    def _on_media(
        self, call: _Call, speaker: str, audio: bool, dg: Datagram, out: list[CaptureEvent]
    ) -> None:
        direction = call.directions[speaker]
        ts, payload = dg.ts, dg.payload
        if ts - call.last_touch > _TOUCH_EVERY_S:
            call.last_touch = ts
            self._dialogs.touch(call.call_id, ts)
        if not audio:  # video, T.38 fax: belongs to the call, never parsed as audio
            self.report.non_audio_packets += 1
            return
        if is_rtcp(payload):  # one header byte: tells RTCP apart without parsing anything
            direction.rtcp += 1
            self.report.rtcp_packets += 1
            return
        if call.policy is Policy.DROP:
            # never parsed, never decoded: only counted, for one-way-audio detection
            direction.packets += 1
            self.report.rtp_packets_dropped_unsampled += 1
            return
        flow = (dg.src, dg.sport, dg.dst, dg.dport)
        if flow != direction.flow:
            # forks, relays and odd B2BUAs can put two flows on one direction: follow one at a
            # time, and switch only when the followed flow has gone quiet
            if direction.flow is not None and ts - direction.flow_seen < _FLOW_SWITCH_S:
                direction.competing += 1
                self.report.competing_packets += 1
                return
            direction.flow = flow
        direction.flow_seen = ts
        try:
            packet = parse_rtp(payload)
        except RtpError:
            self.report.rtp_malformed += 1
            return
        codec = call.codecs[_OTHER[speaker]].get(packet.payload_type) or call.codecs[speaker].get(
            packet.payload_type
        )
        if codec is None:
            # nobody negotiated this payload type: not this call's audio (T.38 switched by a
            # media-gateway protocol, stray packets): counted, never decoded
            self.report.unknown_payload_type += 1
            return
        direction.packets += 1
        self.report.rtp_packets_matched += 1
        _update_jitter(direction, packet.ssrc, packet.timestamp, codec.clock_rate, ts)
        if call.undecodable is Undecodable.SRTP:
            return
        if direction.stream is None or direction.stale:
            if direction.stream is not None:
                self._retire_stream(call, direction, out)
            direction.stream = self._new_stream(call, speaker, direction)
        stream = direction.stream
        decoded = stream.push(packet)
        if stream.undecodable is not None:
            # a timeline of filler without a decodable codec is not audio: hand on nothing
            if call.undecodable is None:
                call.undecodable = stream.undecodable
                call.undecodable_codec = _codec_name(call, packet.payload_type, speaker)
            return
        for pcm in decoded:
            self._emit(call, direction, pcm, stream.sample_rate, out)

    def _new_stream(self, call: _Call, speaker: str, direction: _Direction) -> MediaStream:
        # the receiver's payload-type map governs what the sender puts on the wire
        codecs = {**call.codecs[speaker], **call.codecs[_OTHER[speaker]]}
        trim = 0.0
        if call.policy is Policy.ANALYTICS:  # the trim applies once per direction
            trim = max(0.0, self._trim_seconds - direction.elapsed)
        return MediaStream(codecs, trim_seconds=trim, jitter_depth=self._jitter_depth)

    def _retire_stream(self, call: _Call, direction: _Direction, out: list[CaptureEvent]) -> None:
        stream = direction.stream
        assert stream is not None
        remaining = stream.flush()
        if stream.undecodable is None:
            for pcm in remaining:
                self._emit(call, direction, pcm, stream.sample_rate, out)
        stats = replace(stream.stats, role=direction.role)
        direction.done.append(stats)
        rate = stream.sample_rate
        self.report.decoded_seconds += stats.decoded_samples / rate
        self.report.trimmed_seconds += stats.trimmed_samples / rate
        self.report.concealed_seconds += stats.concealed_samples / rate
        direction.elapsed += (
            stats.trimmed_samples + stats.decoded_samples + stats.concealed_samples
        ) / rate
        direction.stream = None
        direction.stale = False

    def _emit(
        self,
        call: _Call,
        direction: _Direction,
        pcm: np.ndarray,
        rate: int,
        out: list[CaptureEvent],
    ) -> None:
        chunk = AudioChunk(call.ref, direction.role, pcm, rate, direction.offset)
        direction.offset += len(chunk.pcm)
        out.append(chunk)

    def _on_unmatched(self, src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> None:
        self.report.unmatched_packets += 1
        if not _looks_like_rtp(payload):
            return
        key = (src, sport, dst, dport)
        if key in self._unmatched or len(self._unmatched) < _MAX_UNMATCHED_FLOWS:
            self._unmatched[key] = self._unmatched.get(key, 0) + 1

    def _account(self, stats: list[DirectionStats]) -> None:
        r = self.report
        for s in stats:
            if s.packets == 0:
                continue
            r.analysed_directions += 1
            r.lost += s.lost
            r.expected += s.packets + s.lost
            r.duplicates += s.duplicates
            r.telephone_events += s.telephone_events

    def _account_jitter(self, call: _Call) -> None:
        r = self.report
        for direction in call.directions.values():
            if direction.transit is None:
                continue
            ms = direction.jitter * 1000
            r.jitter_directions += 1
            r.mean_jitter_ms += (ms - r.mean_jitter_ms) / r.jitter_directions
            r.max_jitter_ms = max(r.max_jitter_ms, ms)


_NON_AUDIO = frozenset({"TELEPHONE-EVENT", "CN"})
_NO_HIT: tuple[None, None, None] = (None, None, None)


def _update_jitter(
    direction: _Direction, ssrc: int, rtp_ts: int, clock: int, arrival: float
) -> None:
    """RFC 3550 section 6.4.1: J += (|D| - J) / 16, restarted on a new SSRC."""
    transit = arrival - rtp_ts / clock
    if ssrc != direction.jitter_ssrc or direction.transit is None:
        direction.jitter_ssrc = ssrc
    else:
        d = abs(transit - direction.transit)
        if d < _MAX_TRANSIT_STEP_S:  # a timestamp jump (new talk spurt base) is not jitter
            direction.jitter += (d - direction.jitter) / 16
    direction.transit = transit


def _looks_like_rtp(payload: bytes) -> bool:
    return len(payload) >= 12 and payload[0] >> 6 == 2 and not is_rtcp(payload)


def _sum_stats(direction: _Direction) -> DirectionStats:
    total = DirectionStats(role=direction.role)
    for stats in direction.done:
        total = total + stats
    # packets are counted here, where even unparsed (unsampled) media is seen
    return replace(total, packets=direction.packets)


def _codec_name(call: _Call, payload_type: int, speaker: str) -> str:
    codec = call.codecs[_OTHER[speaker]].get(payload_type) or call.codecs[speaker].get(payload_type)
    return codec.encoding if codec is not None else f"PT{payload_type}"


def _undecodable_label(call: _Call, reason: Undecodable) -> str:
    if reason is Undecodable.CODEC and call.undecodable_codec:
        return f"codec {call.undecodable_codec}"
    return reason.value
