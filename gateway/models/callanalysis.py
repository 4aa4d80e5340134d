"""One analysed call, from its audio chunks to its ``CallSummary``.

The speech pipeline (``gateway.dsp.chain``) finds and disguises the speech of each direction;
every segment is scored by the emotion model and, when keyword spotting runs, fed to its
direction's recognizer. Only the anonymized segment audio reaches the models. At the end the
readings become shares, distributions, tension events and relative positions; nothing of the
audio, and no time other than fractions of the call, survives the call.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gateway.callsummary import (
    EMOTIONS,
    CallSummary,
    RoleSummary,
    TopicMention,
    duration_bucket,
)
from gateway.config import Config
from gateway.dsp.chain import CallSpeech, CallSpeechSummary, SpeechSegment
from gateway.dsp.frames import to_int16
from gateway.events import AudioChunk, Role
from gateway.models.emotion import EmotionModel
from gateway.models.keywords import KeywordSpotter, TopicStream
from gateway.models.tension import ScoredSegment, tension_events, trend

_ROLES = (Role.OPERATOR, Role.CUSTOMER)


@dataclass(slots=True)
class _TopicTrack:
    """A direction's recognizer fed with speech segments only, and where each segment lies."""

    stream: TopicStream
    fed: list[int] = field(default_factory=list)  # samples fed before each segment
    starts: list[float] = field(default_factory=list)  # the segment's start in the call, s
    total: int = 0

    def feed(self, segment: SpeechSegment) -> None:
        self.fed.append(self.total)
        self.starts.append(segment.start)
        pcm = to_int16(segment.pcm)
        self.stream.feed(pcm)
        self.total += len(pcm)

    def mentions(self, duration: float) -> list[TopicMention]:
        """The hits, moved from "fraction of the speech fed" to "fraction of the call"."""
        out = []
        for hit in self.stream.finish():
            sample = hit.position * self.total
            i = max(bisect.bisect_right(self.fed, sample) - 1, 0)
            seconds = self.starts[i] + (sample - self.fed[i]) / self.stream.rate
            position = min(max(seconds / duration, 0.0), 1.0) if duration > 0 else 0.0
            out.append(TopicMention(hit.topic, hit.role, position))
        return out


class CallAnalysis:
    """Feed it one ANALYTICS call's chunks, then ``finish()`` for the summary.

    ``emotion`` or ``keywords`` may be None when that stage is shed under overload; the
    summary then names the stage in ``skipped`` and its coverage shows what was lost.
    ``on_segment`` sees every anonymized speech segment (the daemon records them).
    """

    def __init__(
        self,
        config: Config,
        emotion: EmotionModel | None,
        keywords: KeywordSpotter | None,
        on_segment: Callable[[SpeechSegment], None] | None = None,
    ) -> None:
        self._config = config
        self._on_segment = on_segment
        self._speech = CallSpeech.from_config(config)
        self._emotion = emotion
        self._keywords = keywords
        self._segments: list[ScoredSegment] = []
        self._tracks: dict[Role, _TopicTrack] = {}
        self._rate = config.speech.analysis_rate

    def push(self, chunk: AudioChunk) -> None:
        for segment in self._speech.push(chunk):
            self._analyse(segment)

    def finish(self) -> CallSummary:
        segments, speech = self._speech.finish()
        for segment in segments:
            self._analyse(segment)
        self._segments.sort(key=lambda s: s.start)
        duration = speech.duration
        topics = [m for track in self._tracks.values() for m in track.mentions(duration)]
        skipped = frozenset(
            name for name, stage in (("emotion", self._emotion), ("keywords", self._keywords))
            if stage is None
        )  # fmt: skip
        return CallSummary(
            duration_bucket=duration_bucket(duration),
            analysed_share=self._analysed_share(),
            skipped=skipped,
            silence_ratio=speech.silence_ratio,
            overtalk_ratio=speech.overtalk_ratio,
            roles=self._role_summaries(speech),
            tension=tension_events(self._segments, self._config.tension, duration),
            trend=trend(self._segments, self._config.tension, duration),
            topics=tuple(sorted(topics, key=lambda m: m.position)),
        )

    def _analyse(self, segment: SpeechSegment) -> None:
        if self._on_segment is not None:
            self._on_segment(segment)
        scores = self._emotion.predict(segment.pcm) if self._emotion is not None else None
        self._segments.append(ScoredSegment(segment.role, segment.start, segment.duration, scores))
        if self._keywords is not None and segment.role in _ROLES:
            track = self._tracks.get(segment.role)
            if track is None:
                track = _TopicTrack(self._keywords.stream(segment.role, self._rate))
                self._tracks[segment.role] = track
            track.feed(segment)

    def _analysed_share(self) -> float:
        """Share of the call's speech that every stage that ran could read."""
        speech = sum(s.duration for s in self._segments)
        if speech <= 0 or self._emotion is None:
            return 0.0
        return min(sum(s.duration for s in self._segments if s.scores is not None) / speech, 1.0)

    def _role_summaries(self, speech: CallSpeechSummary) -> tuple[RoleSummary, ...]:
        spoken = {d.role: d.speech for d in speech.directions if d.role in _ROLES}
        total = sum(spoken.values())
        summaries = []
        for role in _ROLES:
            if spoken.get(role, 0.0) <= 0:
                continue
            readings = [
                (s.duration, s.scores)
                for s in self._segments
                if s.role is role and s.scores is not None
            ]
            weights = np.array([seconds for seconds, _ in readings])
            if readings and weights.sum() > 0:
                weights = weights / weights.sum()
                dist = weights @ np.array([r.probabilities for _, r in readings])
                emotions = tuple(float(p) for p in dist / dist.sum())
                arousal = float(weights @ np.array([r.arousal for _, r in readings]))
                valence = float(weights @ np.array([r.valence for _, r in readings]))
            else:
                emotions, arousal, valence = (0.0,) * len(EMOTIONS), 0.0, 0.0
            summaries.append(
                RoleSummary(
                    role,
                    talk_share=min(spoken[role] / total, 1.0),
                    emotions=emotions,
                    arousal=float(np.clip(arousal, -1.0, 1.0)),
                    valence=float(np.clip(valence, -1.0, 1.0)),
                )
            )
        return tuple(summaries)
