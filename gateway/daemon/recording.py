"""A call's audio laid on one timeline per direction and handed on in sealed-size parts.

A recording is cut into parts of ``part_seconds`` so that a long call holds at most about two
parts in memory whatever its length. Each part is a WAV file (16-bit PCM, one channel per
role present, in the order operator, customer, unknown) whose INFO comment names the
recording's random id, the part's number, where it starts and its channels: enough to put the
parts of one recording back in order, nothing about the call.

Directions reach the tape independently. A part is cut once every direction has passed its
end, or once the leading direction is a whole part further (a direction on hold or one-way
audio must not hold memory); audio that arrives later for a range already cut becomes a part
of its own, so nothing is lost.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.events import Role

_CHANNEL_ORDER = (Role.OPERATOR, Role.CUSTOMER, Role.UNKNOWN)


@dataclass(slots=True)
class _Piece:
    start: int  # sample index on the recording's timeline
    pcm: np.ndarray  # int16

    @property
    def end(self) -> int:
        return self.start + self.pcm.size


@dataclass(slots=True)
class _Direction:
    pieces: list[_Piece] = field(default_factory=list)
    reached: int = 0  # end of the latest audio seen, in samples


class Tape:
    """Collects int16 audio per role; calls ``sink(wav_bytes)`` for each finished part."""

    __slots__ = ("_directions", "_part", "_parts", "_rate", "_sink", "_window", "recording_id")

    def __init__(self, rate: int, part_seconds: float, sink: Callable[[bytes], None]) -> None:
        self._rate = rate
        self._part = max(1, round(part_seconds * rate))
        self._sink = sink
        self._directions: dict[Role, _Direction] = {}
        self._window = 0  # start of the part being filled, in samples
        self._parts = 0
        self.recording_id = secrets.token_hex(8)

    @property
    def parts(self) -> int:
        return self._parts

    def add(self, role: Role, start: int, pcm: np.ndarray) -> None:
        """Lay ``pcm`` (int16) at sample ``start`` of ``role``'s timeline."""
        if pcm.size == 0:
            return
        direction = self._directions.setdefault(role, _Direction())
        piece = _Piece(start, pcm.astype(np.int16, copy=False))
        if piece.start < self._window:
            late = piece.pcm[: self._window - piece.start]
            self._emit(piece.start, {role: [_Piece(piece.start, late)]}, late.size)
            piece = _Piece(self._window, piece.pcm[late.size :])
            if piece.pcm.size == 0:
                return
        direction.pieces.append(piece)
        direction.reached = max(direction.reached, piece.end)
        self._cut_ready()

    def close(self) -> None:
        """Hand on whatever is left; the tape takes nothing afterwards."""
        end = max((d.reached for d in self._directions.values()), default=self._window)
        while self._window < end:
            self._cut(min(self._window + self._part, end))
        self._directions.clear()

    def _cut_ready(self) -> None:
        while True:
            part_end = self._window + self._part
            reached = [d.reached for d in self._directions.values()]
            if min(reached) >= part_end or max(reached) >= part_end + self._part:
                self._cut(part_end)
            else:
                return

    def _cut(self, end: int) -> None:
        taken: dict[Role, list[_Piece]] = {}
        for role, direction in self._directions.items():
            kept: list[_Piece] = []
            for piece in direction.pieces:
                if piece.start < end:
                    head = piece.pcm[: end - piece.start]
                    taken.setdefault(role, []).append(_Piece(piece.start, head))
                if piece.end > end:
                    cut = max(end - piece.start, 0)
                    kept.append(_Piece(piece.start + cut, piece.pcm[cut:]))
            direction.pieces = kept
        if taken:
            self._emit(self._window, taken, end - self._window)
        self._window = end

    def _emit(self, start: int, pieces: dict[Role, list[_Piece]], length: int) -> None:
        roles = [r for r in _CHANNEL_ORDER if r in pieces]
        frames = np.zeros((length, len(roles)), dtype=np.int16)
        for channel, role in enumerate(roles):
            for piece in pieces[role]:
                frames[piece.start - start : piece.end - start, channel] = piece.pcm
        comment = (
            f"callveil recording {self.recording_id} part {self._parts} starts "
            f"{start / self._rate:.2f} s channels {','.join(r.value for r in roles)}"
        )
        self._parts += 1
        self._sink(wav_bytes(frames, self._rate, comment))


def wav_bytes(frames: np.ndarray, rate: int, comment: str) -> bytes:
    """A RIFF/WAVE file of int16 ``frames`` (samples x channels) with an INFO comment."""
    channels = frames.shape[1]
    data = np.ascontiguousarray(frames, dtype="<i2").tobytes()
    text = comment.encode("ascii") + b"\0"
    text += b"\0" * (len(text) % 2)
    info = b"INFO" + b"ICMT" + struct.pack("<I", len(text)) + text
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * 2 * channels, 2 * channels, 16)
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"LIST"
        + struct.pack("<I", len(info))
        + info
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body
