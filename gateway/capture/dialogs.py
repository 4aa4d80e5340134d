"""Call tracking: SIP messages of one Call-ID to call events (offered, media, answered, ended).

A call is the INVITE dialog set of one Call-ID, forks included. The tracker sees the network
from a mirror port, so it can miss packets, see one message twice (before and after a proxy)
or out of order; it never raises on what it is fed and keeps at most ``max_calls`` calls.

Endings that SIP may still reverse wait for ``retry_window`` seconds of capture time (the
64*T1 transaction window): a 401/407 challenge or a 3xx is followed by a new INVITE with the
same Call-ID, a forking proxy reports one branch's failure or CANCEL while another branch still
rings, and a serial-forking proxy cancels one phone before ringing the next. A new INVITE, a
new fork or an answer inside the window keeps the call; otherwise it ends as REJECTED or
CANCELLED when the window closes (or at ``end_all``).
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Literal

from gateway.capture.datagram import Datagram
from gateway.capture.sdp import MediaDescription, SdpError, parse_sdp
from gateway.capture.sip import SipMessage, sdp_payload, uri_user
from gateway.events import EndReason

Party = Literal["caller", "callee"]

# Methods whose messages (and 1xx/2xx responses) carry an offer or an answer (RFC 3261,
# RFC 3262, RFC 3311); SDP elsewhere (e.g. in a 200 to OPTIONS) describes capabilities only.
_NEGOTIATING = frozenset({"INVITE", "ACK", "PRACK", "UPDATE"})
_COUNTED_METHODS = frozenset(
    {"ACK", "BYE", "CANCEL", "INFO", "MESSAGE", "NOTIFY", "OPTIONS", "PRACK", "PUBLISH"}
    | {"REFER", "REGISTER", "SUBSCRIBE", "UPDATE"}
)
_MAX_FORKS = 16  # per call: To-tags and SDP senders remembered (a fork flood is ignored past it)
# Expiry scans every call, so it runs at most this often (capture seconds); an ending is
# reported up to this late.
_SCAN_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class CallOffered:
    call_id: str
    caller_addr: bytes
    callee_addr: bytes
    request_uri_user: str
    from_user: str
    to_user: str
    headers: dict[str, list[str]] = field(repr=False)


@dataclass(frozen=True, slots=True)
class MediaNegotiated:
    call_id: str
    party: Party  # the party that sent this SDP
    fork: str  # To-tag of the callee side, "" before the callee has answered with a tag
    media: list[MediaDescription]


@dataclass(frozen=True, slots=True)
class CallAnswered:
    call_id: str


@dataclass(frozen=True, slots=True)
class CallTerminated:
    call_id: str
    reason: EndReason


DialogEvent = CallOffered | MediaNegotiated | CallAnswered | CallTerminated


@dataclass(slots=True)
class _Call:
    # From-tag of each INVITE that opened the call (several when a B2BUA keeps the Call-ID on
    # its outgoing leg) -> highest CSeq of such an INVITE: requests with these tags come from
    # the caller's side.
    caller_tags: dict[str, int]
    last_seen: float
    answered: bool = False
    ending: EndReason | None = None  # REJECTED or CANCELLED, pending until ``ending_at``
    ending_at: float = math.inf
    invites: set[tuple[int, str]] = field(default_factory=set)  # (CSeq, Via branch) seen
    forks: dict[str, bool] = field(default_factory=dict)  # callee To-tag -> still ringing
    sdp_seen: dict[tuple[str, str], tuple[int, str, int, int]] = field(default_factory=dict)


class DialogTracker:
    """Follows calls by Call-ID and turns SIP messages into ``DialogEvent``s."""

    def __init__(
        self,
        *,
        max_calls: int = 10_000,
        answered_timeout: float = 3600.0,
        unanswered_timeout: float = 180.0,
        retry_window: float = 32.0,
    ) -> None:
        if max_calls < 1:
            raise ValueError("max_calls must be at least 1")
        self.max_calls = max_calls
        self.answered_timeout = answered_timeout  # answered call without SIP or media
        self.unanswered_timeout = unanswered_timeout  # call never answered
        self.retry_window = retry_window
        self.counters: Counter[str] = Counter()
        self._calls: dict[str, _Call] = {}
        self._unanswered: OrderedDict[str, None] = OrderedDict()  # oldest first
        # Ended Call-IDs -> time of their last message: late retransmissions, ACKs and
        # responses must not open a new call.
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._next_due = math.inf  # no call can expire before this capture time

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def handle(self, msg: SipMessage, dg: Datagram) -> list[DialogEvent]:
        """Events caused by one parsed SIP message carried by ``dg``."""
        events: list[DialogEvent] = []
        call = self._calls.get(msg.call_id)
        if call is None:
            self._no_call(msg, dg, events)
            return events
        if dg.ts > call.last_seen:
            call.last_seen = dg.ts
        if msg.status is None:
            self._request(msg, call, events)
        else:
            self._response(msg, call, events)
        return events

    def touch(self, call_id: str, now: float) -> bool:
        """Media activity keeps a call alive; False when the call is not (or no longer) known."""
        call = self._calls.get(call_id)
        if call is None:
            return False
        if now > call.last_seen:
            call.last_seen = now
        return True

    def expire(self, now: float) -> list[CallTerminated]:
        """End calls whose pending ending is due or that were idle too long at time ``now``."""
        ended: list[CallTerminated] = []
        while self._ended:
            call_id, last = next(iter(self._ended.items()))
            if last + self.retry_window > now:
                break
            del self._ended[call_id]
        if now < self._next_due:
            return ended
        next_due = math.inf
        for call_id, call in list(self._calls.items()):
            due = self._due(call)
            if due <= now:
                pending = call.ending is not None and call.ending_at <= now
                reason = call.ending if pending and call.ending else EndReason.TIMEOUT
                ended.append(self._end(call_id, reason, now))
            elif due < next_due:
                next_due = due
        self._next_due = max(next_due, now + _SCAN_INTERVAL)
        return ended

    def end_all(self) -> list[CallTerminated]:
        """The capture stopped: end every call still known (pending endings keep their reason)."""
        ended = [
            CallTerminated(call_id, call.ending or EndReason.CAPTURE_END)
            for call_id, call in self._calls.items()
        ]
        self._calls.clear()
        self._unanswered.clear()
        self._ended.clear()
        self._next_due = math.inf
        return ended

    # -- messages --------------------------------------------------------------------------

    def _no_call(self, msg: SipMessage, dg: Datagram, events: list[DialogEvent]) -> None:
        call_id = msg.call_id
        if call_id in self._ended:
            self._ended[call_id] = max(self._ended[call_id], dg.ts)
            self._ended.move_to_end(call_id)
            self.counters["dialog.after_end"] += 1
        elif msg.status is not None:
            self.counters["dialog.no_call.response"] += 1
        elif msg.method != "INVITE":
            method = msg.method.lower() if msg.method in _COUNTED_METHODS else "other"
            self.counters[f"dialog.no_call.{method}"] += 1
        elif msg.to_tag:
            # A re-INVITE of a call that started before the capture: its roles are unknown.
            self.counters["dialog.no_call.reinvite"] += 1
        else:
            self._offer(msg, dg, events)

    def _offer(self, msg: SipMessage, dg: Datagram, events: list[DialogEvent]) -> None:
        if len(self._calls) >= self.max_calls:
            events.append(self._evict(dg.ts))
        call = _Call(caller_tags={msg.from_tag: msg.cseq}, last_seen=dg.ts)
        call.invites.add((msg.cseq, _via_branch(msg)))
        self._calls[msg.call_id] = call
        self._unanswered[msg.call_id] = None
        self._next_due = min(self._next_due, dg.ts + self.unanswered_timeout)
        events.append(
            CallOffered(
                call_id=msg.call_id,
                caller_addr=dg.src,
                callee_addr=dg.dst,
                request_uri_user=uri_user(msg.request_uri or ""),
                from_user=msg.from_user,
                to_user=msg.to_user,
                headers=msg.headers,
            )
        )
        self._media(msg, call, events)

    def _request(self, msg: SipMessage, call: _Call, events: list[DialogEvent]) -> None:
        method = msg.method
        if method == "INVITE" and not msg.to_tag:
            # The initial INVITE again: a retransmission, a copy seen past a proxy or a B2BUA,
            # an authenticated retry or a proxy trying the next phone.
            key = (msg.cseq, _via_branch(msg))
            if key in call.invites:
                self.counters["dialog.invite_retransmission"] += 1
            else:
                if len(call.invites) >= _MAX_FORKS:
                    call.invites.clear()
                call.invites.add(key)
                tags = call.caller_tags
                if msg.cseq > tags.get(msg.from_tag, -1) and (
                    msg.from_tag in tags or len(tags) < _MAX_FORKS
                ):
                    tags[msg.from_tag] = msg.cseq
                if not call.answered:
                    call.ending, call.ending_at = None, math.inf
            self._media(msg, call, events)
        elif method in _NEGOTIATING:
            self._media(msg, call, events)
        elif method == "BYE":
            # A BYE after a final failure (some tools send one) confirms that failure.
            reason = EndReason.BYE if call.answered else call.ending or EndReason.BYE
            events.append(self._end(msg.call_id, reason, call.last_seen))
        elif method == "CANCEL":
            if call.answered:
                self.counters["dialog.cancel_after_answer"] += 1
            else:
                self._pend(call, EndReason.CANCELLED)

    def _response(self, msg: SipMessage, call: _Call, events: list[DialogEvent]) -> None:
        status = msg.status or 0
        if msg.cseq_method != "INVITE":
            if status < 300 and msg.cseq_method in _NEGOTIATING:
                self._media(msg, call, events)
            return
        if status < 200:
            if msg.to_tag and not call.answered and msg.to_tag not in call.forks:
                if len(call.forks) < _MAX_FORKS:
                    call.forks[msg.to_tag] = True
                # A new branch rings: a failure reported by another branch is not the end.
                if call.ending is EndReason.REJECTED:
                    call.ending, call.ending_at = None, math.inf
            self._media(msg, call, events)
        elif status < 300:
            self._media(msg, call, events)
            if not call.answered:
                call.answered = True
                call.ending, call.ending_at = None, math.inf
                self._unanswered.pop(msg.call_id, None)
                events.append(CallAnswered(msg.call_id))
        elif call.answered:
            self.counters["dialog.reinvite_failed"] += 1  # e.g. 488 to a T.38 re-INVITE
        elif msg.cseq < call.caller_tags.get(msg.from_tag, msg.cseq):
            self.counters["dialog.stale_failure"] += 1  # e.g. a 401 repeated after the retry
        else:
            if msg.to_tag in call.forks:
                call.forks[msg.to_tag] = False
            cancelled = status == 487 or call.ending is EndReason.CANCELLED
            if cancelled:
                self._pend(call, EndReason.CANCELLED)
            elif any(call.forks.values()):
                self.counters["dialog.fork_failed"] += 1  # other branches still ring
            else:
                self._pend(call, EndReason.REJECTED)

    def _media(self, msg: SipMessage, call: _Call, events: list[DialogEvent]) -> None:
        body = sdp_payload(msg)
        if body is None:
            return
        from_caller = msg.from_tag in call.caller_tags
        # A request comes from the party in From; a response from the other side.
        party: Party = "caller" if from_caller == (msg.status is None) else "callee"
        fork = msg.to_tag if from_caller else msg.from_tag
        key = (party, fork)
        signature = (msg.cseq, msg.cseq_method, msg.status or 0, hash(body))
        if call.sdp_seen.get(key) == signature:
            self.counters["sdp.repeat"] += 1
            return
        try:
            sdp = parse_sdp(body)
        except SdpError:
            self.counters["sdp.malformed"] += 1
            return
        if sdp.skipped:
            self.counters["sdp.line_skipped"] += sdp.skipped
        if key not in call.sdp_seen and len(call.sdp_seen) >= _MAX_FORKS:
            call.sdp_seen.clear()
        call.sdp_seen[key] = signature
        events.append(MediaNegotiated(msg.call_id, party, fork, sdp.media))

    # -- endings ---------------------------------------------------------------------------

    def _pend(self, call: _Call, reason: EndReason) -> None:
        """Schedule an ending that SIP may still reverse within the retry window."""
        if call.ending is None:
            call.ending_at = call.last_seen + self.retry_window
            self._next_due = min(self._next_due, call.ending_at)
        call.ending = reason if call.ending is not EndReason.CANCELLED else call.ending

    def _due(self, call: _Call) -> float:
        timeout = self.answered_timeout if call.answered else self.unanswered_timeout
        return min(call.ending_at, call.last_seen + timeout)

    def _end(self, call_id: str, reason: EndReason, now: float) -> CallTerminated:
        del self._calls[call_id]
        self._unanswered.pop(call_id, None)
        self._ended[call_id] = now
        self._ended.move_to_end(call_id)
        if len(self._ended) > self.max_calls:
            self._ended.popitem(last=False)
        return CallTerminated(call_id, reason)

    def _evict(self, now: float) -> CallTerminated:
        """Make room for a new call: the oldest unanswered call goes first."""
        self.counters["dialog.overflow"] += 1
        victim = next(iter(self._unanswered or self._calls))
        return self._end(victim, EndReason.TIMEOUT, now)


def _via_branch(msg: SipMessage) -> str:
    """The branch parameter of the top Via: it names the transaction of a request."""
    via = msg.headers.get("via")
    if not via:
        return ""
    top = via[0].partition(",")[0]
    for param in top.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "branch":
            return value.strip()
    return ""
