"""Per-direction framing: AudioChunks of any length into exact 20 ms float32 frames.

Chunk offsets count samples since the first kept sample of the direction. A short gap
(lost packets nobody concealed) is filled with digital silence so that the stateful stages
downstream see one continuous signal; a gap longer than ``MAX_FILL_SECONDS`` is not filled,
which keeps memory and work bounded: the framer closes the partial frame and the next frame
starts at the new offset. Audio that overlaps what was already framed is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gateway.events import AudioChunk

FRAME_SECONDS = 0.02
MAX_FILL_SECONDS = 1.0
_INT16_SCALE = 1.0 / 32768.0


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1) back to int16 PCM, the inverse of the framer's scaling."""
    return np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int  # samples since the start of the direction's kept audio
    pcm: np.ndarray  # float32 in [-1, 1), exactly FRAME_SECONDS long


class Framer:
    """Cuts one direction's chunks into frames; ``flush`` returns the zero-padded remainder."""

    __slots__ = ("_held", "_held_offset", "filled_samples", "overlap_samples", "rate", "size")

    def __init__(self, sample_rate: int) -> None:
        size = sample_rate * FRAME_SECONDS
        if sample_rate <= 0 or size != round(size):
            raise ValueError(
                f"sample rate {sample_rate} Hz does not divide into 20 ms frames; use 8000 or 16000"
            )
        self.rate = sample_rate
        self.size = round(size)
        self._held = np.zeros(0, dtype=np.float32)
        self._held_offset = 0  # offset of _held[0]
        self.filled_samples = 0  # gap samples replaced by silence
        self.overlap_samples = 0  # samples dropped because they were already framed

    def push(self, chunk: AudioChunk) -> list[Frame]:
        if chunk.sample_rate != self.rate:
            raise ValueError(
                f"chunk at {chunk.sample_rate} Hz in a direction framed at {self.rate} Hz; "
                "a direction keeps one rate (start a new direction for a new rate)"
            )
        pcm = chunk.pcm
        expected = self._held_offset + self._held.size
        frames: list[Frame] = []
        if chunk.offset < expected:
            skip = min(expected - chunk.offset, pcm.size)
            self.overlap_samples += skip
            pcm = pcm[skip:]
        elif chunk.offset > expected:
            gap = chunk.offset - expected
            if gap <= MAX_FILL_SECONDS * self.rate:
                self.filled_samples += gap
                self._held = np.concatenate([self._held, np.zeros(gap, dtype=np.float32)])
            else:
                frames.extend(self.flush())
                self._held_offset = chunk.offset
        if pcm.size:
            self._held = np.concatenate([self._held, pcm.astype(np.float32) * _INT16_SCALE])
        frames.extend(self._cut())
        return frames

    def flush(self) -> list[Frame]:
        """The partial frame held back, padded with silence (none if nothing is held)."""
        if self._held.size == 0:
            return []
        pad = self.size - self._held.size
        self._held = np.concatenate([self._held, np.zeros(pad, dtype=np.float32)])
        return self._cut()

    def _cut(self) -> list[Frame]:
        count = self._held.size // self.size
        if count == 0:
            return []
        used = count * self.size
        blocks = self._held[:used].reshape(count, self.size)
        frames = [Frame(self._held_offset + i * self.size, blocks[i]) for i in range(count)]
        self._held = self._held[used:].copy()
        self._held_offset += used
        return frames
