"""Reassembly of fragmented IPv4 and IPv6 datagrams, bounded in memory and time.

Overlapping fragments are never merged: a fragment that repeats one already held byte range for
byte range is a harmless duplicate and is dropped, while any other overlap discards the whole
datagram (as RFC 5722 requires for IPv6), because choosing which copy of the bytes to believe is
how overlap attacks hide content from a monitor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

# An IP datagram cannot be longer than its 16-bit total-length field allows.
MAX_DATAGRAM = 65535
# A datagram split into more pieces than this is an attack, not a network.
MAX_FRAGMENTS_PER_DATAGRAM = 64


@dataclass(slots=True)
class _Pending:
    first_ts: float
    proto: int = -1  # from the fragment at offset 0, unknown until it arrives
    total: int = -1  # from the last fragment, unknown until it arrives
    size: int = 0  # bytes held
    pieces: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, data), unsorted


class FragmentReassembler:
    """Collect fragments until a datagram is whole; return it, or None while it is not.

    ``key`` identifies one datagram: (source, destination, identification, protocol) for IPv4,
    (source, destination, identification) for IPv6, as built by the caller. Bounded by
    ``max_datagrams`` incomplete datagrams and ``max_bytes`` held in all (the oldest are evicted
    first), and by ``timeout`` seconds of capture time (``expire``).
    """

    def __init__(
        self,
        counters: Counter[str],
        *,
        max_datagrams: int = 256,
        max_bytes: int = 4 * 1024 * 1024,
        timeout: float = 30.0,
        max_size: int = MAX_DATAGRAM,
    ) -> None:
        self.counters = counters
        self.max_datagrams = max_datagrams
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_size = max_size
        self._pending: dict[Hashable, _Pending] = {}
        self._bytes = 0

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._pending)

    def add(
        self,
        ts: float,
        key: Hashable,
        proto: int,
        offset: int,
        more: bool,
        data: bytes,
    ) -> tuple[int, bytes] | None:
        """Add one fragment; return ``(protocol, payload)`` once the datagram is complete.

        ``proto`` is the protocol (IPv6: next header) this fragment announces; the one carried
        by the fragment at offset 0 is the datagram's.
        """
        counters = self.counters
        pending = self._pending
        counters["frag.fragments"] += 1
        length = len(data)
        end = offset + length
        if end > self.max_size:
            counters["frag.too_big"] += 1
            self._discard(key)
            return None
        if more and (length == 0 or length % 8):
            # Only the last fragment may have a length that is not a multiple of 8.
            counters["frag.malformed"] += 1
            self._discard(key)
            return None
        entry = pending.get(key)
        if entry is None:
            while len(pending) >= self.max_datagrams:
                self._evict_oldest()
            entry = _Pending(ts)
            pending[key] = entry
        furthest = 0
        for start, piece in entry.pieces:
            piece_end = start + len(piece)
            if start < end and offset < piece_end:
                if start == offset and piece_end == end:
                    counters["frag.duplicate"] += 1
                    return None
                counters["frag.overlap"] += 1
                self._discard(key)
                return None
            furthest = max(furthest, piece_end)
        if not more:
            if (entry.total >= 0 and entry.total != end) or furthest > end:
                counters["frag.overlap"] += 1
                self._discard(key)
                return None
            entry.total = end
        elif entry.total >= 0 and end > entry.total:
            counters["frag.overlap"] += 1
            self._discard(key)
            return None
        if len(entry.pieces) >= MAX_FRAGMENTS_PER_DATAGRAM:
            counters["frag.too_many"] += 1
            self._discard(key)
            return None
        while self._bytes + length > self.max_bytes:
            victim = self._evict_oldest()
            if victim == key:
                return None
        if offset == 0:
            entry.proto = proto
        entry.pieces.append((offset, data))
        entry.size += length
        self._bytes += length
        if entry.size != entry.total:
            return None
        # Pieces do not overlap and lie inside [0, total), so equal sizes mean full coverage.
        del pending[key]
        self._bytes -= entry.size
        entry.pieces.sort()
        counters["frag.reassembled"] += 1
        return entry.proto, b"".join(piece for _start, piece in entry.pieces)

    def expire(self, now: float) -> None:
        """Drop incomplete datagrams whose first fragment is older than ``timeout``."""
        limit = now - self.timeout
        stale = [key for key, entry in self._pending.items() if entry.first_ts < limit]
        for key in stale:
            self.counters["frag.timeout"] += 1
            self._discard(key)

    def clear(self) -> None:
        """Drop everything held (end of input), counting what never completed."""
        if self._pending:
            self.counters["frag.incomplete"] += len(self._pending)
        self._pending.clear()
        self._bytes = 0

    def _discard(self, key: Hashable) -> None:
        entry = self._pending.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size

    def _evict_oldest(self) -> Hashable:
        oldest = next(iter(self._pending))
        self.counters["frag.evicted"] += 1
        self._discard(oldest)
        return oldest
