"""The plain type the packet layer hands to SIP and RTP handling, inside ``capture/`` only."""

from __future__ import annotations

from dataclasses import dataclass

UDP = 17
TCP = 6


@dataclass(slots=True)
class Datagram:
    """One UDP payload, or one whole SIP message reassembled from a TCP stream.

    Addresses are the raw 4 or 16 bytes of IPv4/IPv6 (cheap to hash and compare on the hot
    path); ``ts`` is the capture time in seconds and never leaves ``capture/``.
    """

    ts: float
    src: bytes
    sport: int
    dst: bytes
    dport: int
    proto: int  # UDP or TCP
    payload: bytes
