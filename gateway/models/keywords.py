"""Topic spotting with Vosk in grammar mode: which topics each side of a call talks about.

The recognizer may only choose among the configured phrases, the model's unknown-word symbol
and a few filler words. A grammar of phrases alone forces ordinary speech onto some phrase;
the fillers give that speech somewhere else to go, and a word-confidence threshold (Vosk's
lattice posteriors) drops what is left. bench/keywords.py measures both.

A hit's position is relative: where its first word starts in this direction's audio, as a
fraction of the direction's whole length, fixed when the direction ends. No time leaves a
stream.

Kaldi adds random dither to the audio before its features unless the model's conf/mfcc.conf
says ``--dither=0``, so two decodings of the same audio can differ near the threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import vosk

from gateway.config import ConfigError, KeywordsConfig
from gateway.dsp.resample import Resampler
from gateway.events import Role

# How models spell the garbage word: "[unk]" in the Vosk project's models, "<UNK>" in others.
_UNKNOWN_WORDS = ("[unk]", "<UNK>", "<unk>")
_KALDI_DEFAULT_RATE = 16000  # what Kaldi assumes when mfcc.conf names no --sample-frequency


class KeywordSetupError(ConfigError):
    """The model or the lexicon cannot be used; raised at start-up, never during a call."""


@dataclass(frozen=True, slots=True)
class TopicHit:
    """A topic phrase heard in one direction of a call."""

    topic: str
    role: Role
    position: float  # where the phrase starts, 0..1 through this direction's audio
    confidence: float  # the least confidence among the phrase's words


@dataclass(frozen=True, slots=True)
class _Phrase:
    topic: str
    words: tuple[str, ...]


class KeywordSpotter:
    """A loaded model and its topic grammar, built once per process and shared by all streams."""

    __slots__ = ("_grammar", "_model", "_phrases", "sample_rate", "threshold")

    def __init__(
        self,
        model_path: Path,
        topics: Mapping[str, Sequence[str]],
        *,
        threshold: float,
        fillers: Sequence[str] = (),
    ) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold {threshold!r} must be from 0 to 1")
        phrases = tuple(
            _Phrase(topic, tuple(phrase.split()))
            for topic, topic_phrases in topics.items()
            for phrase in topic_phrases
        )
        if not phrases or not all(p.words for p in phrases):
            raise ValueError("the lexicon needs at least one topic and no empty phrase")
        self._phrases = phrases
        self.threshold = threshold
        self.sample_rate = _model_rate(model_path)
        vosk.SetLogLevel(-1)  # Kaldi's informational lines would bypass our logging on stderr
        try:
            self._model = vosk.Model(str(model_path))
        except Exception:  # vosk raises a bare Exception after logging Kaldi's reason
            raise KeywordSetupError(
                f"keywords.model_path = '{model_path}' is not a Vosk model directory (it needs "
                "am/, conf/ and graph/); unpack the model there or fix the path"
            ) from None
        self._check_vocabulary(fillers)
        unknown = [w for w in _UNKNOWN_WORDS if self._known(w)][:1]
        grammar = [" ".join(p.words) for p in phrases] + list(fillers) + unknown
        self._grammar = json.dumps(grammar, ensure_ascii=False)

    @classmethod
    def from_config(cls, config: KeywordsConfig) -> KeywordSpotter:
        return cls(
            Path(config.model_path),
            config.topics,
            threshold=config.threshold,
            fillers=config.fillers,
        )

    def stream(self, role: Role, sample_rate: int) -> TopicStream:
        """A recognizer for one direction of one call, fed ``sample_rate`` int16 PCM."""
        # Vosk always lets Kaldi downsample, but upsamples only if the model's mfcc.conf allows
        # it, so lower rates are raised here.
        upsampler = (
            Resampler(sample_rate, self.sample_rate) if sample_rate < self.sample_rate else None
        )
        recognizer = vosk.KaldiRecognizer(
            self._model, max(sample_rate, self.sample_rate), self._grammar
        )
        recognizer.SetWords(True)
        return TopicStream(recognizer, upsampler, role, sample_rate, self._phrases, self.threshold)

    def _known(self, word: str) -> bool:
        return self._model.vosk_model_find_word(word) >= 0

    def _check_vocabulary(self, fillers: Sequence[str]) -> None:
        problems = []
        for phrase in self._phrases:
            missing = [w for w in phrase.words if not self._known(w)]
            if missing:
                problems.append(
                    f"keywords.topics.{phrase.topic}: {' '.join(phrase.words)!r} "
                    f"({', '.join(map(repr, missing))})"
                )
        missing = [w for filler in fillers for w in filler.split() if not self._known(w)]
        if missing:
            problems.append(f"keywords.fillers ({', '.join(map(repr, missing))})")
        if problems:
            raise KeywordSetupError(
                "words missing from the vocabulary of the model in keywords.model_path: "
                + "; ".join(problems)
                + ". The recognizer can only hear words it knows: spell them as the model does "
                "(usually lowercase), or replace them with words it knows"
            )


class TopicStream:
    """One direction of one call: its own recognizer, fed as the audio arrives."""

    __slots__ = (
        "_hits",
        "_phrases",
        "_recognizer",
        "_samples",
        "_threshold",
        "_upsampler",
        "rate",
        "role",
    )

    def __init__(
        self,
        recognizer: vosk.KaldiRecognizer,
        upsampler: Resampler | None,
        role: Role,
        rate: int,
        phrases: tuple[_Phrase, ...],
        threshold: float,
    ) -> None:
        self._recognizer: vosk.KaldiRecognizer | None = recognizer
        self._upsampler = upsampler
        self.role = role
        self.rate = rate
        self._phrases = phrases
        self._threshold = threshold
        self._samples = 0
        self._hits: list[tuple[str, float, float]] = []  # topic, seconds in, confidence

    def feed(self, pcm: np.ndarray) -> None:
        """Recognize one more stretch of mono int16 PCM at this stream's rate."""
        if self._recognizer is None:
            raise RuntimeError("this direction has finished; start a new stream")
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise ValueError("a stream takes one-dimensional int16 PCM")
        self._samples += len(pcm)
        self._accept(_int16(self._upsampler.process(pcm)) if self._upsampler else pcm)

    def finish(self) -> list[TopicHit]:
        """End the direction and return its hits, placed relative to its whole length."""
        if self._recognizer is None:
            raise RuntimeError("this direction has already finished")
        if self._upsampler:
            self._accept(_int16(self._upsampler.flush()))
        self._collect(self._recognizer.FinalResult())
        self._recognizer = None  # frees Kaldi's decoder now rather than at garbage collection
        seconds = self._samples / self.rate
        return [
            TopicHit(topic, self.role, min(start / seconds, 1.0), confidence)
            for topic, start, confidence in self._hits
        ]

    def _accept(self, pcm: np.ndarray) -> None:
        assert self._recognizer is not None
        if self._recognizer.AcceptWaveform(pcm.tobytes()):
            self._collect(self._recognizer.Result())

    def _collect(self, result: str) -> None:
        words = json.loads(result).get("result", [])
        heard = tuple(w["word"] if w["conf"] >= self._threshold else None for w in words)
        for i, word in enumerate(words):
            for phrase in self._phrases:
                end = i + len(phrase.words)
                if heard[i:end] == phrase.words:
                    confidence = min(w["conf"] for w in words[i:end])
                    self._hits.append((phrase.topic, float(word["start"]), float(confidence)))


def _int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def _model_rate(model_path: Path) -> int:
    """The rate the model's features were computed at, from its mfcc.conf."""
    for conf in (model_path / "conf" / "mfcc.conf", model_path / "mfcc.conf"):
        if conf.is_file():
            found = re.search(r"^--sample-frequency=(\d+)", conf.read_text(), re.MULTILINE)
            return int(found.group(1)) if found else _KALDI_DEFAULT_RATE
    return _KALDI_DEFAULT_RATE
