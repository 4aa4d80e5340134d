"""SIP messages carried over TCP: stream reassembly and message framing.

Each direction of a connection is its own byte stream. Bytes are delivered in sequence order;
retransmitted and overlapping bytes already delivered are dropped, out-of-order segments wait in
a small bounded queue, and a gap that does not fill makes the stream resynchronise at the next
segment that starts a SIP message. Messages are framed by the blank line that ends the headers
plus ``Content-Length`` (RFC 3261 section 18.3 makes it mandatory on stream transports).

Only streams whose bytes start like SIP are kept: anything else (TLS, WebSocket, HTTP) costs one
entry in a bounded table of ignored streams, so that it is counted once.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from gateway.capture.datagram import TCP, Datagram

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04

# A SIP request line (RFC 3261 "Method SP Request-URI SP SIP-Version") or status line.
_SIP_START = re.compile(
    rb"(?:[A-Z]{2,32} (?:sips?|tel):[^ \r\n]{1,2048} SIP/2\.0\r?\n|SIP/2\.0 [1-6]\d\d )"
)
_CONTENT_LENGTH = re.compile(rb"\n(?:content-length|l)[ \t]*:[ \t]*(\d{1,10})[ \t]*\r?\n", re.I)
_NEWLINES = b"\r\n"
# Longest request or status line accepted (the request URI is bounded by the pattern above).
_MAX_START_LINE = 2200
_SEQ_MOD = 1 << 32
_SEQ_HALF = 1 << 31


def looks_like_sip(data: bytes) -> bool:
    """Whether ``data`` starts with a SIP request line or status line."""
    return _SIP_START.match(data) is not None


@dataclass(slots=True)
class _Stream:
    next_seq: int
    last_ts: float
    synced: bool = True  # False after a gap: wait for a segment that starts a message
    buf: bytearray = field(default_factory=bytearray)
    early: dict[int, bytes] = field(default_factory=dict)  # out-of-order segments by sequence
    early_bytes: int = 0
    early_since: float = 0.0  # capture time the oldest held segment arrived


_Key = tuple[bytes, int, bytes, int]


class TcpSipReassembler:
    """Turn TCP segments into whole SIP messages (one ``Datagram`` with ``proto=TCP`` each).

    Bounded: ``max_streams`` directions tracked (least recently active evicted first), each
    holding at most ``max_message`` bytes of a message in progress and as many again in at most
    ``max_early_segments`` out-of-order segments; streams idle for ``idle_timeout`` seconds of
    capture time are dropped by ``expire``. A gap in the sequence that has not filled after
    ``gap_timeout`` seconds (a segment the mirror port lost will never come) or that outgrows
    the bounds is skipped: the stream resumes at the first held segment that starts a message.
    """

    def __init__(
        self,
        counters: Counter[str],
        *,
        max_streams: int = 2048,
        max_message: int = 64 * 1024,
        max_early_segments: int = 32,
        idle_timeout: float = 300.0,
        gap_timeout: float = 2.0,
        max_ignored: int = 4096,
    ) -> None:
        self.counters = counters
        self.max_streams = max_streams
        self.max_message = max_message
        self.max_early_segments = max_early_segments
        self.idle_timeout = idle_timeout
        self.gap_timeout = gap_timeout
        self.max_ignored = max_ignored
        self._streams: dict[_Key, _Stream] = {}
        # Directions whose bytes were not SIP, with the time they were last seen.
        self._ignored: dict[_Key, float] = {}

    def __len__(self) -> int:
        return len(self._streams)

    @property
    def bytes_held(self) -> int:
        return sum(len(s.buf) + s.early_bytes for s in self._streams.values())

    def segment(
        self,
        ts: float,
        src: bytes,
        sport: int,
        dst: bytes,
        dport: int,
        seq: int,
        flags: int,
        payload: bytes,
    ) -> list[Datagram]:
        """Feed one TCP segment; return the SIP messages it completes (often none)."""
        key = (src, sport, dst, dport)
        # Popped and re-inserted, so that dict order is recency order.
        stream = self._streams.pop(key, None)
        if flags & (TCP_RST | TCP_SYN):
            # The connection ends, or a new one reuses the 4-tuple: nothing older carries over.
            self._close(stream)
            stream = None
            self._ignored.pop(key, None)
            if flags & TCP_RST or not payload:
                return []
            seq = (seq + 1) % _SEQ_MOD  # the SYN itself takes one sequence number
        if not payload:
            if stream is not None:
                if flags & TCP_FIN:
                    self._close(stream)
                else:
                    self._insert(key, stream)
            return []
        if stream is None:
            if not looks_like_sip(payload.lstrip(_NEWLINES)):
                self._ignore(key, ts)
                return []
            self._ignored.pop(key, None)
            stream = _Stream(seq, ts)
        stream.last_ts = ts
        messages: list[Datagram] = []
        self._receive(stream, ts, seq, payload)
        self._frame(stream, ts, key, messages)
        if flags & TCP_FIN:
            self._close(stream)
        else:
            self._insert(key, stream)
        return messages

    def expire(self, now: float) -> None:
        """Drop streams idle for longer than ``idle_timeout`` seconds of capture time."""
        limit = now - self.idle_timeout
        streams = self._streams
        # Dict order is recency order, so the stale streams are at the front.
        while streams:
            key = next(iter(streams))
            if streams[key].last_ts >= limit:
                break
            self.counters["tcp.idle_expired"] += 1
            self._close(streams.pop(key))
        ignored = self._ignored
        while ignored:
            key = next(iter(ignored))
            if ignored[key] >= limit:
                break
            del ignored[key]

    def clear(self) -> None:
        """Drop every stream (end of input), counting messages left incomplete."""
        for stream in self._streams.values():
            self._close(stream)
        self._streams.clear()
        self._ignored.clear()

    def _insert(self, key: _Key, stream: _Stream) -> None:
        streams = self._streams
        if len(streams) >= self.max_streams:
            self.counters["tcp.evicted"] += 1
            self._close(streams.pop(next(iter(streams))))
        streams[key] = stream

    def _ignore(self, key: _Key, ts: float) -> None:
        ignored = self._ignored
        if ignored.pop(key, None) is None:
            self.counters["tcp.not_sip"] += 1
            if len(ignored) >= self.max_ignored:
                del ignored[next(iter(ignored))]
        ignored[key] = ts

    def _close(self, stream: _Stream | None) -> None:
        if stream is not None and (stream.buf.strip(_NEWLINES) or stream.early):
            self.counters["tcp.incomplete"] += 1

    def _receive(self, stream: _Stream, ts: float, seq: int, payload: bytes) -> None:
        if not stream.synced and not self._sync(stream, seq, payload):
            return
        delta = (seq - stream.next_seq) % _SEQ_MOD
        if delta >= _SEQ_HALF:
            # Starts before the next expected byte: a retransmission or an overlap.
            behind = _SEQ_MOD - delta
            if behind >= len(payload):
                self.counters["tcp.retransmission"] += 1
                return
            self.counters["tcp.overlap"] += 1
            payload = payload[behind:]
        elif delta:
            early = stream.early
            if not early:
                stream.early_since = ts
            self.counters["tcp.out_of_order"] += 1
            if seq not in early:
                early[seq] = payload
                stream.early_bytes += len(payload)
            if (
                delta >= self.max_message
                or len(early) > self.max_early_segments
                or stream.early_bytes > self.max_message
                or ts - stream.early_since > self.gap_timeout
            ):
                self._skip_gap(stream)
            return
        self._append(stream, payload)
        self._drain(stream)

    def _drain(self, stream: _Stream) -> None:
        """Append held segments that the bytes received so far have reached."""
        early = stream.early
        while early:
            progressed = False
            for early_seq in list(early):
                early_delta = (early_seq - stream.next_seq) % _SEQ_MOD
                if early_delta == 0 or early_delta >= _SEQ_HALF:
                    data = early.pop(early_seq)
                    stream.early_bytes -= len(data)
                    behind = (_SEQ_MOD - early_delta) % _SEQ_MOD
                    if behind < len(data):
                        self._append(stream, data[behind:])
                    progressed = True
            if not progressed:
                break

    def _skip_gap(self, stream: _Stream) -> None:
        """Give up on missing bytes: resume at the first held segment that starts a message."""
        self.counters["tcp.gap"] += 1
        stream.buf.clear()
        early = stream.early
        for early_seq in sorted(early, key=lambda s: (s - stream.next_seq) % _SEQ_MOD):
            if looks_like_sip(early[early_seq].lstrip(_NEWLINES)):
                stream.next_seq = early_seq
                self._drain(stream)
                return
        self._resync(stream)

    def _sync(self, stream: _Stream, seq: int, payload: bytes) -> bool:
        """Restart an unsynchronised stream at ``seq`` if the segment starts a SIP message."""
        if not looks_like_sip(payload.lstrip(_NEWLINES)):
            self.counters["tcp.skipped"] += 1
            return False
        stream.synced = True
        stream.next_seq = seq
        return True

    def _append(self, stream: _Stream, data: bytes) -> None:
        stream.buf += data
        stream.next_seq = (stream.next_seq + len(data)) % _SEQ_MOD

    def _resync(self, stream: _Stream) -> None:
        stream.buf.clear()
        stream.early.clear()
        stream.early_bytes = 0
        stream.synced = False

    def _frame(self, stream: _Stream, ts: float, key: _Key, out: list[Datagram]) -> None:
        buf = stream.buf
        counters = self.counters
        while buf:
            if buf[0] in _NEWLINES:
                # CRLF keep-alives (RFC 5626) between messages.
                del buf[: len(buf) - len(buf.lstrip(_NEWLINES))]
                if not buf:
                    return
            line_end = buf.find(b"\n", 0, _MAX_START_LINE)
            if line_end < 0:
                if len(buf) >= _MAX_START_LINE:
                    counters["tcp.desync"] += 1
                    self._resync(stream)
                return
            if not looks_like_sip(bytes(buf[: line_end + 1])):
                # A wrong Content-Length or lost bytes put us mid-message.
                counters["tcp.desync"] += 1
                self._resync(stream)
                return
            head_end = buf.find(b"\r\n\r\n", line_end - 1, self.max_message)
            if head_end < 0:
                if len(buf) >= self.max_message:
                    counters["tcp.oversized"] += 1
                    self._resync(stream)
                return
            body_start = head_end + 4
            match = _CONTENT_LENGTH.search(buf, line_end, body_start)
            if match is None:
                counters["tcp.no_content_length"] += 1
            total = body_start + (int(match.group(1)) if match else 0)
            if total > self.max_message:
                counters["tcp.oversized"] += 1
                self._resync(stream)
                return
            if len(buf) < total:
                return
            src, sport, dst, dport = key
            out.append(Datagram(ts, src, sport, dst, dport, TCP, bytes(buf[:total])))
            counters["tcp.sip_messages"] += 1
            del buf[:total]
