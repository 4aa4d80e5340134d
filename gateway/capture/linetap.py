"""Calls from an analog or line-level tap: two sound-card channels, no signalling.

Without SIP there is no identity to hash, so sampling is a fresh random draw per call (just
as unpredictable), and contract rules, which need signalling, cannot apply. A call starts when
either channel rises above the activity level and ends after both have been silent for
``end_silence_s``. The first ``trim_seconds`` of each channel of an analysed call are discarded
as they arrive, before they reach any buffer.
"""

from __future__ import annotations

import secrets

import numpy as np

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
)


def level_dbfs(block: np.ndarray) -> float:
    if block.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(block.astype(np.float64) ** 2)))
    return 20.0 * np.log10(max(rms, 1e-3) / 32768.0)


class LineTapSession:
    def __init__(self, config: Config, sample_rate: int) -> None:
        tap = config.soundcard
        self._rate = sample_rate
        self._sample_rate = config.privacy.sample_rate
        self._trim = round(config.privacy.trim_seconds * sample_rate)
        self._active_dbfs = tap.activity_dbfs
        self._end_silence = round(tap.end_silence_s * sample_rate)
        operator = tap.operator_channel
        self._roles = (
            (Role.OPERATOR, Role.CUSTOMER)
            if operator == 0
            else (
                Role.CUSTOMER,
                Role.OPERATOR,
            )
        )
        self._ref: CallRef | None = None
        self._policy = Policy.DROP
        self._position = 0  # samples since the call started
        self._silent = 0  # samples of silence on both channels
        self._stats = [_Counts(), _Counts()]

    def feed(self, channel_0: np.ndarray, channel_1: np.ndarray) -> list[CaptureEvent]:
        out: list[CaptureEvent] = []
        channels = (channel_0, channel_1)
        active = any(level_dbfs(c) > self._active_dbfs for c in channels)
        if self._ref is None:
            if not active:
                return out
            self._start(out)
        assert self._ref is not None
        n = len(channel_0)
        if self._policy is Policy.ANALYTICS:
            keep_from = max(0, self._trim - self._position)
            for index, pcm in enumerate(channels):
                counts = self._stats[index]
                counts.trimmed += min(keep_from, n)
                if keep_from < n:
                    kept = np.ascontiguousarray(pcm[keep_from:], dtype=np.int16)
                    offset = self._position + keep_from - self._trim
                    out.append(AudioChunk(self._ref, self._roles[index], kept, self._rate, offset))
                    counts.decoded += len(kept)
        self._position += n
        self._silent = 0 if active else self._silent + n
        if self._silent >= self._end_silence:
            self._end(EndReason.LINE_SILENT, out)
        return out

    def finish(self) -> list[CaptureEvent]:
        out: list[CaptureEvent] = []
        if self._ref is not None:
            self._end(EndReason.CAPTURE_END, out)
        return out

    def _start(self, out: list[CaptureEvent]) -> None:
        self._ref = CallRef.new()
        # no identity to hash on a line tap: a fresh random draw is just as unpredictable
        analysed = secrets.randbits(64) < self._sample_rate * 2**64
        self._policy = Policy.ANALYTICS if analysed else Policy.DROP
        self._position = self._silent = 0
        self._stats = [_Counts(), _Counts()]
        out.append(CallStarted(self._ref, self._policy, frozenset(self._roles)))

    def _end(self, reason: EndReason, out: list[CaptureEvent]) -> None:
        assert self._ref is not None
        stats = tuple(
            DirectionStats(role=role, decoded_samples=c.decoded, trimmed_samples=c.trimmed)
            for role, c in zip(self._roles, self._stats, strict=True)
        )
        out.append(CallEnded(self._ref, reason, None, stats))
        self._ref = None


class _Counts:
    __slots__ = ("decoded", "trimmed")

    def __init__(self) -> None:
        self.decoded = 0
        self.trimmed = 0
