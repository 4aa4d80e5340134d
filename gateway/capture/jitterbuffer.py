"""Reordering of one SSRC's RTP packets by sequence number.

The depth is counted in sequence numbers, not in wall-clock time, so a capture file replayed
at any speed and the live mirror give the same playout. A packet is played when it is the next
expected one; a missing sequence number is declared lost once ``depth`` newer sequence numbers
have been seen. What the buffer holds is therefore bounded by ``depth`` packets.

Sequence jumps follow RFC 3550 appendix A.1: a jump of more than ``max_dropout`` ahead or
``max_misorder`` behind is held on probation, and becomes a stream restart (a new sequence
base) only when the next packet continues from it; a lone stray packet is dropped.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gateway.capture.rtp import RtpPacket

_SEQ_MOD = 1 << 16
_HALF = 1 << 15
_WINDOW = 256  # sequence numbers behind the playout point remembered as played or lost
_WINDOW_MASK = (1 << _WINDOW) - 1


@dataclass(slots=True)
class Playout:
    """A packet leaving the buffer, with the loss just before it."""

    packet: RtpPacket
    lost: int = 0  # sequence numbers missing right before this packet
    restart: bool = False  # first packet of a new sequence base: timestamps restart too


class JitterBuffer:
    def __init__(
        self,
        depth: int = 6,
        max_dropout: int = 3000,
        max_misorder: int = 100,
        counters: Counter[str] | None = None,
    ) -> None:
        if depth < 1:
            raise ValueError(f"jitter depth {depth} must be at least one packet")
        self.depth = depth
        self.max_dropout = max_dropout
        self.max_misorder = max_misorder
        self.lost = 0  # sequence numbers declared missing at playout
        self.duplicates = 0
        # anomalies: "rtp.late" (arrived after its slot was declared lost), "seq.restart",
        # "seq.stray" (a lone packet far off the sequence, dropped)
        self.counters: Counter[str] = Counter() if counters is None else counters
        self._reset()

    def _reset(self) -> None:
        self._held: dict[int, RtpPacket] = {}  # extended sequence number -> packet
        self._highest: int | None = None  # highest extended sequence number seen
        self._next: int | None = None  # extended sequence number due next; None until started
        self._played = 0  # bit k set: sequence number _next - 1 - k was played
        self._probe: RtpPacket | None = None
        self._restart_pending = False
        self._lost_before_next = 0  # declared lost since the last packet played

    def push(self, packet: RtpPacket) -> list[Playout]:
        """Take one packet in arrival order; return the packets now due, in sequence order."""
        highest = self._highest
        if highest is None:
            self._highest = packet.sequence
            self._held[packet.sequence] = packet
            return self._release()
        delta = (packet.sequence - highest + _HALF) % _SEQ_MOD - _HALF
        if delta > self.max_dropout or delta < -self.max_misorder:
            return self._jump(packet)
        if self._probe is not None:
            self.counters["seq.stray"] += 1
            self._probe = None
        ext = highest + delta
        nxt = self._next
        if nxt is not None and ext <= nxt:
            if ext == nxt and not self._held:  # in order, nothing waiting: the common case
                self._highest = ext
                self._next = nxt + 1
                self._played = ((self._played << 1) | 1) & _WINDOW_MASK
                return [self._playout(packet)]
            if ext < nxt:
                back = nxt - 1 - ext
                if back < _WINDOW and (self._played >> back) & 1:
                    self.duplicates += 1
                else:
                    self.counters["rtp.late"] += 1
                return []
        if ext in self._held:
            self.duplicates += 1
            return []
        self._held[ext] = packet
        if ext > highest:
            self._highest = ext
        return self._release()

    def flush(self) -> list[Playout]:
        """Release everything held, declaring the holes lost (end of stream)."""
        out = self._drain()
        self._reset()
        return out

    def _jump(self, packet: RtpPacket) -> list[Playout]:
        probe = self._probe
        if probe is None or packet.sequence != (probe.sequence + 1) % _SEQ_MOD:
            if probe is not None:
                self.counters["seq.stray"] += 1
            self._probe = packet
            return []
        out = self._drain()
        self._reset()
        self.counters["seq.restart"] += 1
        self._restart_pending = True
        self._highest = packet.sequence
        self._held[packet.sequence - 1] = probe
        self._held[packet.sequence] = packet
        return out + self._release()

    def _release(self) -> list[Playout]:
        held = self._held
        highest = self._highest
        assert highest is not None
        nxt = self._next
        if nxt is None:
            lowest = min(held)
            if highest - lowest < self.depth:
                return []
            nxt = lowest
        out: list[Playout] = []
        while held:
            packet = held.pop(nxt, None)
            if packet is not None:
                out.append(self._playout(packet))
                self._played = ((self._played << 1) | 1) & _WINDOW_MASK
                nxt += 1
                continue
            # give up only on sequence numbers that `depth` newer ones have overtaken
            given_up = min(min(held), highest - self.depth + 1) - nxt
            if given_up <= 0:
                break
            self._declare_lost(given_up)
            nxt += given_up
        self._next = nxt
        return out

    def _drain(self) -> list[Playout]:
        held = self._held
        if not held:
            return []
        nxt = self._next if self._next is not None else min(held)
        out: list[Playout] = []
        for ext in sorted(held):
            self._declare_lost(ext - nxt)
            out.append(self._playout(held[ext]))
            nxt = ext + 1
        held.clear()
        self._next = nxt
        return out

    def _declare_lost(self, count: int) -> None:
        self.lost += count
        self._lost_before_next += count
        self._played = (self._played << count) & _WINDOW_MASK

    def _playout(self, packet: RtpPacket) -> Playout:
        playout = Playout(packet, self._lost_before_next, self._restart_pending)
        self._lost_before_next = 0
        self._restart_pending = False
        return playout
