"""Anonymization benchmark: privacy, emotion utility and cost at telephone band.

Every RAVDESS clip goes 16 kHz -> 8 kHz -> G.711 A-law round trip, which is what the box
hears, and is then left as it is ("original"), anonymized by the McAdams B2 re-implementation
(bench/mcadams.py, alpha ~ U[0.5, 0.9]) or by callveil's anonymizer (gateway/dsp/anonymize.py,
ranges from the default [anonymizer] configuration, streamed in 20 ms frames). Each clip stands
for one call direction and gets its own random draw.

Actors are split by speaker, never by file, into three blocks (1-8, 9-16, 17-24 on the full
run; each half female, half male). Each block is evaluated in turn while the other two train
the attacker's back-end and the emotion classifier; the table gives means over the three.
A trial scores an enrolment model (the mean embedding of five clips of one evaluation speaker,
every fourth clip set aside for this) against one other clip of a speaker of the same gender,
by cosine similarity of `resemblyzer` speaker embeddings (its encoder expects 16 kHz, so the
8 kHz signal is upsampled for it; above 4 kHz there is nothing).

- ignorant: enrolment on original speech, test on anonymized speech;
- lazy-informed: both sides anonymized, each clip with its own draw;
- semi-informed: as lazy-informed, scored after a back-end trained on anonymized clips (own
  draws) of the training actors, which is what an attacker who has the software can make: LDA,
  or within-class covariance normalization (WCCN); per block the one with the lower EER counts;
- inverting: knows the method but not the draw, and moves every clip's pitch, vocal-tract scale
  and tilt to fixed targets before embedding (bench/inversion.py); against callveil it also
  knows the configured ranges and tries undoing the disguise whose directions it guesses per
  clip; each scored by cosine and by the back-ends trained on clips treated alike; the lowest
  EER counts.

Emotion, three ways. callveil's shipped emotion model (gateway/models/emotion.onnx) on the
actors its card tests on (21-24), which it never heard in training or model selection, fed as
the box feeds it (speech trimmed, 16 kHz analysis rate); it was trained with callveil's
anonymizer as augmentation, so its column shows what the box keeps, not a fair contest with
B2. A stand-in that knows neither: a logistic regression over prosodic and spectral statistics
(F0, energy, MFCC, spectral shape), trained here on original speech of the training actors,
tested on the evaluation actors' clips before and after anonymization; and that stand-in
retrained on anonymized clips of the training actors (own draws), as a model that only ever
hears anonymized calls would be trained.
Classes: neutral (with calm), happy, sad, angry, fearful, disgust, surprised; UAR is the mean
of the per-class recalls.

Pitch correlation is Pearson's r between the F0 tracks (pYIN) of the original and the
anonymized clip over frames voiced in both, averaged over all clips; a pitch shift multiplies
F0 by a constant, which r ignores. RTF is CPU time over audio time, on one thread.

Each anonymized clip gets one disguise, so one run's figures carry the noise of that draw;
``--draws K`` draws every clip K times and averages the ignorant, lazy and semi EERs and the
shipped model's UAR over the draws (the table gives their standard deviation over the draws;
the other columns come from the first draw). Below the table, each target of callveil's
anonymizer against B2 with its verdict, the averaged figures with their standard errors.

Run by hand after ``bash scripts/setup-eval`` (the full run: 40 minutes on one shared core,
each further draw about 2 minutes more for callveil and 4 for B2):
    .venv/bin/python bench/anonymization.py                      # all 24 actors
    .venv/bin/python bench/anonymization.py --draws 6            # the figures the README gives
    .venv/bin/python bench/anonymization.py --speakers 12 --limit 20   # a quick look
    .venv/bin/python bench/anonymization.py -c site.toml   # the [anonymizer] ranges of a site
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from inversion import Population, normalize, undo
from scipy.signal import resample_poly

from gateway.capture.codecs.g711 import ALAW_TABLE
from gateway.config import AnonymizerConfig, ConfigError, anonymizer_ranges
from gateway.dsp.anonymize import Anonymizer, draw_params

RATE = 8000
FRAME = RATE // 50
ENROL_CLIPS = 5
EMOTIONS = {"calm": "neutral"}  # merged as in the telephone label set
REPO = Path(__file__).resolve().parents[1]

System = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclass(slots=True)
class Clip:
    path: Path
    speaker: int
    female: bool
    emotion: str


@dataclass(slots=True)
class Measured:
    """What one system produced for every clip."""

    embeddings: list[np.ndarray] = field(default_factory=list)
    normalized: list[np.ndarray] = field(default_factory=list)  # after the inverting attacker
    undone: list[np.ndarray] = field(default_factory=list)  # after the undoing attacker, if any
    f0: dict[int, np.ndarray] = field(default_factory=dict)
    features: dict[int, np.ndarray] = field(default_factory=dict)
    shipped: dict[int, str] = field(default_factory=dict)  # the shipped model's label per clip
    cpu_s: float = 0.0
    audio_s: float = 0.0


# --- data ---------------------------------------------------------------------------------


def load_clips(root: Path, speakers: int, limit: int | None) -> list[Clip]:
    """The clips of actors 1..speakers, at most ``limit`` per actor."""
    labels = root / "labels.csv"
    if not labels.is_file():
        sys.exit(f"no RAVDESS labels at {labels}: pass --data or set CALLVEIL_SHARED")
    with labels.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["speaker"]) <= speakers]
    # emotions vary fastest, so a per-actor limit keeps every emotion
    order = ("speaker", "repetition", "statement", "intensity", "emotion_code")
    rows.sort(key=lambda r: tuple(r[k] for k in order))
    per_actor: dict[int, int] = {}
    clips = []
    for r in rows:
        actor = int(r["speaker"])
        if limit is not None and per_actor.get(actor, 0) >= limit:
            continue
        per_actor[actor] = per_actor.get(actor, 0) + 1
        emotion = EMOTIONS.get(r["emotion"], r["emotion"])
        clips.append(Clip(root / r["path"], actor, r["gender"] == "female", emotion))
    return clips


def folds(speakers: int) -> list[set[int]]:
    """Three blocks of consecutive actors, each half female (even) and half male (odd)."""
    size = speakers // 3
    return [set(range(start, start + size)) for start in range(1, speakers + 1, size)]


def telephone(path: Path) -> np.ndarray:
    """16 kHz file -> 8 kHz -> G.711 A-law and back, as float in [-1, 1]."""
    import soundfile

    x16, rate = soundfile.read(path, dtype="float64")
    x8 = resample_poly(x16, RATE, rate)
    # A-law decodes to the middle of each step, so the nearest level is the encoder's choice
    levels = np.sort(ALAW_TABLE.astype(np.float64))
    pcm = np.clip(x8 * 32768.0, -32768, 32767)
    i = np.clip(np.searchsorted(levels, pcm), 1, levels.size - 1)
    nearest = np.where(pcm - levels[i - 1] < levels[i] - pcm, levels[i - 1], levels[i])
    return nearest / 32768.0


# --- systems --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallveilSystem:
    """callveil's anonymizer streamed in 20 ms frames; its ranges are public, so the undoing
    attacker knows them."""

    ranges: AnonymizerConfig

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        anonymizer = Anonymizer(draw_params(rng, self.ranges), RATE)
        padded = np.concatenate([x, np.zeros(-x.size % FRAME)]).astype(np.float32)
        out = [anonymizer.process(padded[i : i + FRAME]) for i in range(0, padded.size, FRAME)]
        y = np.concatenate([*out, anonymizer.flush()])
        return y[anonymizer.latency : anonymizer.latency + x.size].astype(np.float64)


def mcadams_system() -> System:
    from mcadams import draw_alpha, mcadams

    return lambda x, rng: mcadams(x, RATE, draw_alpha(rng))


# --- measurements ---------------------------------------------------------------------------


class Probe:
    """Speaker embeddings, F0 tracks and emotion features of 8 kHz signals."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        with warnings.catch_warnings():  # webrtcvad imports pkg_resources
            warnings.simplefilter("ignore")
            from resemblyzer import VoiceEncoder, preprocess_wav
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._preprocess = preprocess_wav

    def embed(self, x: np.ndarray) -> np.ndarray:
        wav = self._preprocess(resample_poly(x, 2, 1).astype(np.float32), source_sr=2 * RATE)
        return self._encoder.embed_utterance(wav)

    @staticmethod
    def f0(x: np.ndarray) -> np.ndarray:
        import librosa

        f0, voiced, _ = librosa.pyin(
            x, fmin=60, fmax=500, sr=RATE, frame_length=512, hop_length=80, resolution=0.25
        )
        return np.where(voiced, f0, np.nan)

    @staticmethod
    def features(x: np.ndarray, f0: np.ndarray) -> np.ndarray:
        """Prosodic and spectral statistics of one clip (the stand-in emotion model's input)."""
        import librosa

        kw = {"n_fft": 512, "hop_length": 80}
        rms_db = 20 * np.log10(librosa.feature.rms(y=x, frame_length=512, hop_length=80)[0] + 1e-6)
        active = rms_db > rms_db.max() - 35
        n = min(active.size, f0.size)
        logf0 = np.log2(f0[:n][active[:n] & ~np.isnan(f0[:n])])
        pitch = (
            [
                logf0.mean(),
                logf0.std(),
                *np.percentile(logf0, [10, 50, 90]),
                np.mean(np.abs(np.diff(logf0))) if logf0.size > 1 else 0.0,
            ]
            if logf0.size
            else [0.0] * 6
        )
        energy = rms_db[active]
        mfcc = librosa.feature.mfcc(y=x, sr=RATE, n_mfcc=13, n_mels=40, fmax=RATE / 2, **kw)
        mfcc = mfcc[:, : active.size][:, active]
        delta = np.diff(mfcc, axis=1)
        shape = [
            librosa.feature.spectral_centroid(y=x, sr=RATE, **kw)[0][active],
            librosa.feature.spectral_rolloff(y=x, sr=RATE, **kw)[0][active],
            librosa.feature.spectral_flatness(y=x, **kw)[0][active],
            librosa.feature.zero_crossing_rate(x, frame_length=512, hop_length=80)[0][active],
        ]
        return np.concatenate(
            [
                pitch,
                [logf0.size / max(active.sum(), 1), active.mean()],
                [energy.mean(), energy.std(), *np.percentile(energy, [10, 50, 90])],
                mfcc.mean(axis=1),
                mfcc.std(axis=1),
                delta.std(axis=1),
                [s.mean() for s in shape],
                [s.std() for s in shape],
            ]
        )


class ShippedModel:
    """callveil's emotion model, on the actors its card tests on."""

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))  # models/ (the training side) is not an installed package
        from gateway.models.emotion import EmotionModel
        from models import corpus

        figures = json.loads((REPO / "models" / "emotion.json").read_text(encoding="utf-8"))
        settings = figures["settings"]
        self.actors = {int(a) for a in settings["split"]["test"]}
        self.labels: dict[str, str] = settings["labels"]  # corpus emotion -> model label
        self._trim_db = float(settings["data"]["trim_db"])
        self._corpus = corpus
        self._model = EmotionModel(threads=1)

    def label(self, original: np.ndarray, heard: np.ndarray) -> str:
        """The label of ``heard`` (8 kHz), trimmed where ``original`` has speech; "unscored"
        where the model declines (too short or silent), which counts as a miss."""
        start, stop = self._corpus.speech_bounds(original.astype(np.float32), self._trim_db)
        audio = self._corpus.to_analysis_rate(heard[start:stop].astype(np.float32))
        scores = self._model.predict(audio)
        return "unscored" if scores is None else scores.label


def measure(
    clips: list[Clip],
    system: System | None,
    probe: Probe,
    shipped: ShippedModel,
    rng: np.random.Generator,
    original: list[np.ndarray],
    label: str,
    population: Population | None = None,
    full: bool = True,
) -> Measured:
    """Every clip through ``system``; with ``population``, the undoing attacker runs too.
    Not ``full``: embeddings and the shipped model's labels only (a further draw)."""
    out = Measured()
    for i, x in enumerate(original):
        if system is None:
            y = x
        else:
            start = time.thread_time()
            y = system(x, rng)
            out.cpu_s += time.thread_time() - start
            out.audio_s += x.size / RATE
        out.embeddings.append(probe.embed(y))
        if clips[i].speaker in shipped.actors:
            out.shipped[i] = shipped.label(x, y)
        if (i + 1) % 100 == 0:
            print(f"  {label}: {i + 1}/{len(clips)} clips", file=sys.stderr)
        if not full:
            continue
        out.f0[i] = probe.f0(y)
        out.features[i] = probe.features(y, out.f0[i])
        out.normalized.append(probe.embed(normalize(y, out.f0[i], clips[i].female)))
        if isinstance(system, CallveilSystem) and population is not None:
            guessed = undo(y, out.f0[i], clips[i].female, system.ranges, population)
            out.undone.append(probe.embed(guessed))
    return out


# --- scoring --------------------------------------------------------------------------------


def eer(scores: np.ndarray, target: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(target, scores)
    fnr = 1.0 - tpr
    i = int(np.argmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2.0)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@dataclass(slots=True)
class Trials:
    """Enrolment models against single test clips of the evaluation speakers, same gender.

    A model is the mean embedding of five clips of one speaker (each clip its own call, so its
    own draw); every fourth clip of a speaker is set aside for models, the others are tests.
    """

    groups: list[list[int]]  # clip indices of each enrolment model
    group_speaker: np.ndarray
    group_female: np.ndarray
    tests: np.ndarray  # clip indices
    test_speaker: np.ndarray
    test_female: np.ndarray

    @classmethod
    def build(cls, clips: list[Clip], evaluated: set[int]) -> Trials:
        groups: list[list[int]] = []
        tests: list[int] = []
        for speaker in sorted(evaluated):
            own = [i for i, c in enumerate(clips) if c.speaker == speaker]
            enrol = own[::4]
            whole = range(0, len(enrol) - ENROL_CLIPS + 1, ENROL_CLIPS)
            groups += [enrol[k : k + ENROL_CLIPS] for k in whole]
            tests += [i for i in own if i not in enrol]
        return cls(
            groups,
            np.array([clips[g[0]].speaker for g in groups]),
            np.array([clips[g[0]].female for g in groups]),
            np.array(tests),
            np.array([clips[i].speaker for i in tests]),
            np.array([clips[i].female for i in tests]),
        )

    def eers(self, enrol: np.ndarray, test: np.ndarray) -> dict[str, float]:
        """EER pooled and per gender; ``enrol`` and ``test`` have a row for every clip."""
        models = _unit(np.stack([_unit(enrol[g]).mean(axis=0) for g in self.groups]))
        scores = models @ _unit(test[self.tests]).T
        pairs = self.group_female[:, None] == self.test_female[None, :]
        target = self.group_speaker[:, None] == self.test_speaker[None, :]
        result = {"all": eer(scores[pairs], target[pairs])}
        for name, is_female in (("F", True), ("M", False)):
            mask = pairs & (self.group_female[:, None] == is_female)
            result[name] = eer(scores[mask], target[mask])
        return result


Backend = Callable[[np.ndarray], np.ndarray]


def lda_backend(embeddings: np.ndarray, speakers: np.ndarray) -> Backend:
    """LDA to (speakers - 1) dimensions, shrinkage-regularized."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(_unit(embeddings), speakers)
    return lambda e: lda.transform(_unit(e))


def wccn_backend(embeddings: np.ndarray, speakers: np.ndarray) -> Backend:
    """Within-class covariance normalization: whitens the variability that the training
    speakers show across their own clips (anonymization draws included), in all dimensions."""
    from sklearn.covariance import LedoitWolf

    unit = _unit(embeddings)
    means = {s: unit[speakers == s].mean(axis=0) for s in np.unique(speakers)}
    within = unit - np.stack([means[s] for s in speakers])
    values, vectors = np.linalg.eigh(LedoitWolf().fit(within).covariance_)
    transform = vectors / np.sqrt(values)
    center = unit.mean(axis=0)
    return lambda e: (_unit(e) - center) @ transform


BACKENDS = {"LDA": lda_backend, "WCCN": wccn_backend}


def best_backend(
    trials: Trials, embeddings: np.ndarray, train: list[int], speakers: np.ndarray
) -> dict[str, float]:
    """EERs after whichever back-end, fitted on the training clips, serves the attacker best."""
    tried = [fit(embeddings[train], speakers) for fit in BACKENDS.values()]
    return min((trials.eers(p(embeddings), p(embeddings)) for p in tried), key=lambda e: e["all"])


def emotion_model(
    clips: list[Clip], train: list[int], features: dict[int, np.ndarray]
) -> Callable[[list[int], dict[int, np.ndarray]], float]:
    """Fit the stand-in classifier; returns a scorer giving UAR on the listed clips."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.5, max_iter=5000, class_weight="balanced")
    )
    model.fit(np.stack([features[i] for i in train]), [clips[i].emotion for i in train])

    def uar(idx: list[int], feats: dict[int, np.ndarray]) -> float:
        predicted = model.predict(np.stack([feats[i] for i in idx]))
        return float(balanced_accuracy_score([clips[i].emotion for i in idx], predicted))

    return uar


def shipped_uar(clips: list[Clip], labels: dict[str, str], found: dict[int, str]) -> float | None:
    from sklearn.metrics import balanced_accuracy_score

    if not found:
        return None
    truth = [labels[clips[i].emotion] for i in found]
    return float(balanced_accuracy_score(truth, list(found.values())))


def pitch_correlation(original: dict[int, np.ndarray], other: dict[int, np.ndarray]) -> float:
    values = []
    for i, f0 in other.items():
        ref = original[i]
        n = min(ref.size, f0.size)
        both = ~np.isnan(ref[:n]) & ~np.isnan(f0[:n])
        if both.sum() >= 10:
            values.append(np.corrcoef(ref[:n][both], f0[:n][both])[0, 1])
    return float(np.nanmean(values))  # NaN: a track that pYIN holds flat


# --- the table ------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """One system's figures, each the mean over the folds (EERs: pooled, female, male).
    Ignorant, lazy and semi EERs and the shipped model's UAR are also means over the draws,
    with their standard deviation over the draws in ``spread`` (zero for one draw)."""

    name: str
    ignorant: dict[str, float]
    lazy: dict[str, float]
    semi: dict[str, float]
    inverting: dict[str, float]
    uar_shipped: float | None  # None: the run holds none of the model's test actors
    uar: float
    uar_adapted: float
    pitch_r: float | None
    rtf: float | None
    draws: int = 1
    spread: dict[str, float] = field(default_factory=dict)


def _mean(results: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


def _sd(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def evaluate(
    clips: list[Clip],
    blocks: list[set[int]],
    systems: dict[str, System],
    seed: int,
    draws: int = 1,
) -> list[Row]:
    """Each block of actors is evaluated in turn, with the other blocks for training. Every
    anonymized clip is drawn ``draws`` times; the further draws serve the columns that are
    averaged over draws (see ``Row``), the rest come from the first."""
    probe = Probe()
    shipped = ShippedModel()
    rng = np.random.default_rng(seed)
    original = [telephone(c.path) for c in clips]
    base = measure(clips, None, probe, shipped, rng, original, "original")
    orig = np.stack(base.embeddings)
    population = Population.of(
        original, [base.f0[i] for i in range(len(clips))], [c.female for c in clips]
    )
    splits = []
    for block in blocks:
        ev = [i for i, c in enumerate(clips) if c.speaker in block]
        tr = [i for i, c in enumerate(clips) if c.speaker not in block]
        speakers = np.array([clips[i].speaker for i in tr])
        splits.append((ev, tr, speakers, Trials.build(clips, block)))
    plain = [emotion_model(clips, tr, base.features) for _, tr, _, _ in splits]

    def privacy(m: Measured) -> dict[str, dict[str, float]]:
        emb = np.stack(m.embeddings)
        found: dict[str, list[dict[str, float]]] = {"ignorant": [], "lazy": [], "semi": []}
        for _, tr, speakers, trials in splits:
            found["ignorant"].append(trials.eers(orig, emb))
            found["lazy"].append(trials.eers(emb, emb))
            found["semi"].append(best_backend(trials, emb, tr, speakers))
        return {k: _mean(v) for k, v in found.items()}

    def row(name: str, m: Measured, further: list[Measured]) -> Row:
        every = [m, *further]
        eers = [privacy(d) for d in every]
        shipped_uars = [shipped_uar(clips, shipped.labels, d.shipped) for d in every]
        spread = {k: _sd([e[k]["all"] for e in eers]) for k in eers[0]}
        if shipped_uars[0] is not None:
            spread["shipped"] = _sd([u for u in shipped_uars if u is not None])
        inverted = [np.stack(m.normalized), *([np.stack(m.undone)] if m.undone else [])]
        inverting, uar, adapted = [], [], []
        for (ev, tr, speakers, trials), scorer in zip(splits, plain, strict=True):
            inverting.append(
                min(
                    (
                        result
                        for z in inverted
                        for result in (trials.eers(z, z), best_backend(trials, z, tr, speakers))
                    ),
                    key=lambda e: e["all"],
                )
            )
            uar.append(scorer(ev, m.features))
            adapted.append(emotion_model(clips, tr, m.features)(ev, m.features))
        cpu_s, audio_s = sum(d.cpu_s for d in every), sum(d.audio_s for d in every)
        return Row(
            name,
            ignorant=_mean([e["ignorant"] for e in eers]),
            lazy=_mean([e["lazy"] for e in eers]),
            semi=_mean([e["semi"] for e in eers]),
            inverting=_mean(inverting),
            uar_shipped=None if shipped_uars[0] is None else float(np.mean(shipped_uars)),
            uar=float(np.mean(uar)),
            uar_adapted=float(np.mean(adapted)),
            pitch_r=pitch_correlation(base.f0, m.f0) if m is not base else None,
            rtf=cpu_s / audio_s if audio_s else None,
            draws=len(every),
            spread=spread,
        )

    rows = [row("original (G.711, no anonymization)", base, [])]
    for name, system in systems.items():
        first = measure(clips, system, probe, shipped, rng, original, name, population)
        further = [
            measure(clips, system, probe, shipped, rng, original, f"{name}, draw {d}", full=False)
            for d in range(2, draws + 1)
        ]
        rows.append(row(name, first, further))
    return rows


def _cell(e: dict[str, float], sd: float | None = None) -> str:
    spread = "" if not sd else f" ± {100 * sd:.1f}"
    return f"{100 * e['all']:.1f}{spread} (F {100 * e['F']:.1f}, M {100 * e['M']:.1f})"


def table(rows: list[Row]) -> str:
    lines = [
        "| system | EER ignorant % | EER lazy-informed % | EER semi-informed % "
        "| EER inverting % | shipped emotion model UAR %, actors 21-24 | stand-in emotion UAR % "
        "| stand-in retrained % | pitch r | RTF, 1 core |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        pitch = "1 (reference)" if r.pitch_r is None else f"{r.pitch_r:.3f}"
        rtf = "-" if r.rtf is None else f"{r.rtf:.4f}"
        model = "-" if r.uar_shipped is None else f"{100 * r.uar_shipped:.1f}"
        if r.spread.get("shipped"):
            model += f" ± {100 * r.spread['shipped']:.1f}"
        sd = r.spread.get
        lines.append(
            f"| {r.name} | {_cell(r.ignorant, sd('ignorant'))} | {_cell(r.lazy, sd('lazy'))} "
            f"| {_cell(r.semi, sd('semi'))} "
            f"| {_cell(r.inverting)} "
            f"| {model} | {100 * r.uar:.1f} | {100 * r.uar_adapted:.1f} | {pitch} | {rtf} |"
        )
    return "\n".join(lines)


def targets(original: Row, b2: Row, callveil: Row) -> str:
    """callveil's targets against B2; over several draws each figure carries its standard
    error over the draws (the draws' noise only: the actors are one fixed sample)."""

    def figure(value: float, row: Row, key: str, scale: float = 1.0) -> str:
        if row.draws == 1:
            return f"{100 * value:.1f}"
        error = row.spread.get(key, 0.0) / np.sqrt(row.draws) * scale
        return f"{100 * value:.1f} ± {100 * error:.1f}"

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    lines = [
        f"Targets ({callveil.draws} draw{'s' if callveil.draws > 1 else ''} per clip"
        + ("; ± standard error over the draws):" if callveil.draws > 1 else "):")
    ]
    for key, name in (("lazy", "lazy-informed"), ("semi", "semi-informed")):
        ours, theirs = getattr(callveil, key)["all"], getattr(b2, key)["all"]
        lines.append(
            f"- {name} EER at least B2's and 40 %: {figure(ours, callveil, key)} vs B2 "
            f"{figure(theirs, b2, key)}: " + verdict(ours >= theirs and ours >= 0.40)
        )
    weakest = min(
        callveil.ignorant["all"],
        callveil.lazy["all"],
        callveil.semi["all"],
        callveil.inverting["all"],
    )
    lines.append(
        f"- every attacker's EER at least 40 %: lowest {100 * weakest:.1f}: "
        + verdict(weakest >= 0.40)
    )
    if original.uar_shipped is not None and b2.uar_shipped is not None:
        ours = original.uar_shipped - (callveil.uar_shipped or 0.0)
        allowed = (original.uar_shipped - b2.uar_shipped) / 3
        lines.append(
            "- shipped model's recall drop at most a third of B2's: "
            f"{figure(ours, callveil, 'shipped')} vs {figure(allowed, b2, 'shipped', 1 / 3)}: "
            + verdict(ours <= allowed)
        )
    pitch, rtf = callveil.pitch_r or 0.0, callveil.rtf or 0.0
    lines.append(f"- pitch r at least 0.8: {pitch:.3f}: " + verdict(pitch >= 0.8))
    lines.append(f"- real-time factor at most 0.02: {rtf:.4f}: " + verdict(rtf <= 0.02))
    return "\n".join(lines)


def default_data() -> Path:
    shared = Path(os.environ.get("CALLVEIL_SHARED", REPO.parent / "shared"))
    return shared / "data" / "ravdess"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="RAVDESS folder")
    parser.add_argument(
        "--speakers",
        type=int,
        default=24,
        help="use actors 1..N (12, 18 or 24; default 24), in three blocks",
    )
    parser.add_argument("--limit", type=int, help="clips per actor (every emotion kept)")
    parser.add_argument("--seed", type=int, help="seed of the random draws (default: random)")
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="disguises per clip for the ignorant, lazy and semi EERs and the shipped model's "
        "UAR, which are averaged over them (default 1; each further draw adds about 2 minutes "
        "for callveil and 4 for B2 on the full run)",
    )
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        help="a callveil configuration whose [anonymizer] ranges to measure (default: the "
        "built-in ranges)",
    )
    args = parser.parse_args()
    if args.speakers not in (12, 18, 24):
        parser.error("--speakers must be 12, 18 or 24 (three blocks, half female, half male)")
    if args.limit is not None and args.limit < 4 * ENROL_CLIPS:
        parser.error(
            f"--limit must be at least {4 * ENROL_CLIPS}: every fourth clip goes to enrolment "
            f"models of {ENROL_CLIPS} clips, the rest are tests"
        )
    if args.draws < 1:
        parser.error("--draws must be at least 1")
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one thread everywhere: the real-time factor is quoted per core
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    clips = load_clips(args.data, args.speakers, args.limit)
    blocks = folds(args.speakers)
    try:
        ranges = anonymizer_ranges(args.config)
    except ConfigError as exc:
        parser.error(str(exc))
    which = "default ranges" if args.config is None else f"ranges of {args.config.name}"
    systems = {
        "McAdams B2 (alpha ~ U[0.5, 0.9])": mcadams_system(),
        f"callveil anonymizer ({which})": CallveilSystem(ranges),
    }
    rows = evaluate(clips, blocks, systems, seed, args.draws)
    names = ", ".join(f"{min(b)}-{max(b)}" for b in blocks)
    print(
        f"RAVDESS at 8 kHz after G.711 A-law; {len(clips)} clips of actors 1-{args.speakers}; "
        f"each block of actors ({names}) evaluated in turn with the other two for training, "
        f"figures are means over the three; seed {seed}\n"
    )
    print(table(rows))
    print()
    print(targets(*rows))


if __name__ == "__main__":
    main()
