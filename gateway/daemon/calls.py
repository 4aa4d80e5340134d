"""What the daemon does with one call, by the policy capture decided at its set-up.

ANALYTICS: the speech pipeline and the models (``CallAnalysis``); the anonymized speech is
recorded and sealed in parts, the ``CallSummary`` is kept and counted. CONTRACT: the decoded
audio, untrimmed and not anonymized, is recorded whole into the contract partition. DROP:
nothing was decoded; the call is only counted.

Handlers hand their results to ``emit`` as plain values (``Sealable`` records and one
``CallDone`` per call); the daemon's writer thread owns the vault and the aggregates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.callsummary import CallSummary, summary_json
from gateway.config import Config
from gateway.daemon.recording import Tape
from gateway.dsp.chain import SpeechSegment
from gateway.dsp.frames import to_int16
from gateway.events import AudioChunk, Policy
from gateway.models.callanalysis import CallAnalysis
from gateway.models.emotion import EmotionModel
from gateway.models.keywords import KeywordSpotter
from gateway.vault.records import Partition


@dataclass(frozen=True, slots=True)
class Sealable:
    """A record for the vault, before sealing."""

    partition: Partition
    kind: str
    data: bytes


@dataclass(frozen=True, slots=True)
class CallDone:
    """A call has ended: its policy, its summary when it was analysed, and its queue."""

    policy: Policy
    summary: CallSummary | None
    queue: str | None = None  # from ``CallStarted``: the aggregates' bucket it counts in


Output = Sealable | CallDone
Emit = Callable[[Output], None]


class CallHandler(Protocol):
    def push(self, chunk: AudioChunk) -> None: ...

    def lost(self, samples: int) -> None: ...

    def finish(self) -> None: ...


class AnalysedCall:
    """A sampled call: disguised, analysed, its anonymized speech recorded."""

    def __init__(
        self,
        config: Config,
        emotion: EmotionModel | None,
        keywords: KeywordSpotter | None,
        emit: Emit,
        *,
        queue: str | None = None,
    ) -> None:
        self._emit = emit
        self._queue = queue
        self._rate = config.speech.analysis_rate
        self._tape = Tape(
            self._rate,
            config.daemon.recording_part_s,
            lambda wav: emit(Sealable("analytics", "recording", wav)),
        )
        self._analysis = CallAnalysis(config, emotion, keywords, on_segment=self._record)
        self._received = 0  # samples of every direction at their input rates
        self._lost = 0

    def push(self, chunk: AudioChunk) -> None:
        self._received += chunk.pcm.size
        self._analysis.push(chunk)

    def lost(self, samples: int) -> None:
        """Audio capture handed on but the daemon dropped under overload."""
        self._lost += samples

    def finish(self) -> None:
        summary = self._analysis.finish()
        self._tape.close()
        total = self._received + self._lost
        if self._lost and total:
            # dropped audio was never analysed: the coverage the aggregates report says so
            share = summary.analysed_share * self._received / total
            summary = dataclasses.replace(summary, analysed_share=share)
        self._emit(Sealable("analytics", "summary", summary_json(summary)))
        self._emit(CallDone(Policy.ANALYTICS, summary, self._queue))

    def _record(self, segment: SpeechSegment) -> None:
        self._tape.add(segment.role, round(segment.start * self._rate), to_int16(segment.pcm))


class ContractCall:
    """A call that concludes or ends a contract: every decoded sample, as evidence."""

    def __init__(self, config: Config, emit: Emit, *, queue: str | None = None) -> None:
        self._config = config
        self._emit = emit
        self._queue = queue
        # one tape per sample rate: the two directions may have negotiated different codecs
        self._tapes: dict[int, Tape] = {}
        self._lost = 0

    def push(self, chunk: AudioChunk) -> None:
        tape = self._tapes.get(chunk.sample_rate)
        if tape is None:
            tape = self._tapes[chunk.sample_rate] = Tape(
                chunk.sample_rate,
                self._config.daemon.recording_part_s,
                lambda wav: self._emit(Sealable("contract", "recording", wav)),
            )
        tape.add(chunk.role, chunk.offset, chunk.pcm)

    def lost(self, samples: int) -> None:
        # the daemon never drops contract audio (it waits instead); counted all the same
        self._lost += samples

    def finish(self) -> None:
        for tape in self._tapes.values():
            tape.close()
        self._emit(CallDone(Policy.CONTRACT, None, self._queue))


class DroppedCall:
    """Not sampled: capture decoded nothing; the call counts towards the sampling rate."""

    def __init__(self, emit: Emit, *, queue: str | None = None) -> None:
        self._emit = emit
        self._queue = queue

    def push(self, chunk: AudioChunk) -> None:
        raise ValueError("a call that was not sampled has no audio; capture sent some")

    def lost(self, samples: int) -> None:
        raise ValueError("a call that was not sampled has no audio to lose")

    def finish(self) -> None:
        self._emit(CallDone(Policy.DROP, None, self._queue))
