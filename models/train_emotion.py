"""Train the emotion model at telephone band, evaluate it on unseen speakers, export it to ONNX
and write its card, with the eGeMAPS + linear SVM baseline on the same split and audio.

Every clip is heard as the box hears it (``models/corpus.py``): 8 kHz, G.711 A-law round trip,
speech trimmed, 16 kHz analysis rate; training clips also pass through the anonymizer, each
copy with its own disguise. Speakers are split train / validation / test by the configuration:
validation picks the epoch, the temperature and the SVM cost; the test speakers are used once,
for the figures. The figures are measured on the exported ONNX file through
``gateway.models.emotion.EmotionModel``, the code the box runs.

Run from the repository root (CPU only; the card states the measured time):
    .venv/bin/python -m models.train_emotion
    .venv/bin/python -m models.train_emotion --limit 16 --epochs 5 --out /tmp/emotion  # a look
Development dependencies: torch, onnx, onnxscript, scikit-learn, opensmile (baseline only).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import pickle
import platform
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from gateway.config import AnonymizerConfig, ConfigError, anonymizer_ranges, parse_config
from gateway.models import logmel
from gateway.models.emotion import FRONTEND, LABELS, SHIPPED_MODEL, EmotionModel
from models import card, corpus, functionals, metrics

REPO = Path(__file__).resolve().parents[1]
CONDITIONS = ("telephone", "anonymized")
MAX_MODEL_BYTES = 5 * 2**20
STATISTICS = "statistics"  # the linear member's input, a named tensor of the exported graph


# --- configuration --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    labels: str
    trim_db: float


@dataclass(frozen=True, slots=True)
class Split:
    train: list[str]
    validation: list[str]
    test: list[str]


@dataclass(frozen=True, slots=True)
class Augmentation:
    anonymized_copies: int
    evaluation_draws: int
    crop_seconds: float
    freq_masks: int
    freq_mask_bands: int
    time_masks: int
    time_mask_frames: int
    # [anonymizer] ranges of the training copies, before they are stretched to cover the
    # evaluated ranges (training_ranges); validated on load like a callveil configuration
    training_ranges: AnonymizerConfig


@dataclass(frozen=True, slots=True)
class Architecture:
    members: int
    channels: int
    embedding: int
    dropout: float
    linear_costs: list[float]
    linear_weights: list[float]


@dataclass(frozen=True, slots=True)
class Training:
    epochs: int
    batch: int
    learning_rate: float
    weight_decay: float
    seed: int
    threads: int


@dataclass(frozen=True, slots=True)
class Baseline:
    costs: list[float]


@dataclass(frozen=True, slots=True)
class Settings:
    data: Data
    labels: dict[str, str]
    split: Split
    augmentation: Augmentation
    model: Architecture
    training: Training
    baseline: Baseline


def load_settings(path: Path) -> Settings:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        sys.exit(f"{path}: cannot read the training configuration ({exc})")
    sections = {f.name: f.type for f in fields(Settings)}
    if set(raw) != set(sections):
        sys.exit(f"{path}: expected exactly the sections {sorted(sections)}, got {sorted(raw)}")
    built: dict[str, Any] = {"labels": dict(raw["labels"])}
    try:
        raw["augmentation"]["training_ranges"] = parse_config(
            {"anonymizer": raw["augmentation"].get("training_ranges", {})},
            source=f"{path} [augmentation.training_ranges]",
        ).anonymizer
    except ConfigError as exc:
        sys.exit(str(exc))
    for name, cls in (
        ("data", Data),
        ("split", Split),
        ("augmentation", Augmentation),
        ("model", Architecture),
        ("training", Training),
        ("baseline", Baseline),
    ):
        try:
            built[name] = cls(**raw[name])
        except TypeError as exc:
            sys.exit(f"{path}: [{name}] {exc}; see models/emotion.toml for the keys")
    settings = Settings(**built)
    groups = [set(settings.split.train), set(settings.split.validation), set(settings.split.test)]
    if any(a & b for i, a in enumerate(groups) for b in groups[i + 1 :]):
        sys.exit(f"{path}: [split] a speaker is in more than one of train, validation and test")
    return settings


# --- data -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Example:
    """One clip as heard under one condition."""

    clip: int  # index into the clip list
    label: int  # index into LABELS
    condition: str  # "telephone" or "anonymized"
    features: np.ndarray  # (frames, bands) log-mel
    statistics: np.ndarray  # the linear member's input (models/functionals.py)
    egemaps: np.ndarray | None
    audio: np.ndarray | None  # kept for validation and test clips, scored through EmotionModel


@dataclass(frozen=True, slots=True)
class Job:
    index: int
    path: Path
    label: int
    draws: int
    keep_audio: bool
    seed: int
    trim_db: float
    baseline: bool
    ranges: AnonymizerConfig


_SMILE: Any = None  # this process's openSMILE extractor, made on first use
_FUNCTIONALS: Any = None  # this process's statistics module, made on first use


def _statistics(x: np.ndarray) -> np.ndarray:
    global _FUNCTIONALS
    if _FUNCTIONALS is None:
        import torch

        torch.set_num_threads(1)  # one process per core already
        _FUNCTIONALS = functionals.Functionals()
    return functionals.of_audio(_FUNCTIONALS, x)


def _egemaps(x: np.ndarray) -> np.ndarray:
    from models import baseline_egemaps  # openSMILE is needed only where the baseline runs

    global _SMILE
    if _SMILE is None:
        _SMILE = baseline_egemaps.extractor()
    return baseline_egemaps.functionals(_SMILE, x)


def prepare(job: Job) -> list[Example]:
    """Every condition of one clip; the disguises are drawn from (seed, clip, draw), so a clip
    is heard the same way whichever process prepares it."""
    x, rate = corpus.read_wav(job.path)
    draws = [np.random.default_rng([job.seed, job.index, d]) for d in range(job.draws)]
    signals = corpus.heard(x, rate, draws, job.ranges, job.trim_db)
    return [
        Example(
            job.index,
            job.label,
            CONDITIONS[min(i, 1)],
            logmel.log_mel(s),
            _statistics(s),
            _egemaps(s) if job.baseline else None,
            s if job.keep_audio else None,
        )
        for i, s in enumerate(signals)
    ]


def training_ranges(settings: Settings, evaluated: AnonymizerConfig) -> AnonymizerConfig:
    """The ranges the training copies are drawn from: ``[augmentation.training_ranges]``
    stretched to hold ``evaluated``, so that every disguise the model is tested under (and the
    box deploys) lies inside what it learned from, along with milder ones."""
    own = settings.augmentation.training_ranges
    return AnonymizerConfig(
        **{
            f.name: [
                min(getattr(own, f.name)[0], getattr(evaluated, f.name)[0]),
                max(getattr(own, f.name)[1], getattr(evaluated, f.name)[1]),
            ]
            for f in fields(AnonymizerConfig)
        }
    )


def prepare_all(
    clips: Sequence[corpus.Clip],
    root: Path,
    settings: Settings,
    baseline: bool,
    ranges: AnonymizerConfig,
) -> list[Example]:
    train = set(settings.split.train)
    # validation chooses epochs and mixing for the distribution the model learned from; only
    # the test hears the evaluated (deployed) ranges
    learned = training_ranges(settings, ranges)
    tested = set(settings.split.test)
    jobs = [
        Job(
            index=i,
            path=root / c.path,
            label=LABELS.index(c.label),
            draws=(
                settings.augmentation.anonymized_copies
                if c.speaker in train
                else settings.augmentation.evaluation_draws
            ),
            keep_audio=c.speaker not in train,
            seed=settings.training.seed,
            trim_db=settings.data.trim_db,
            baseline=baseline,
            ranges=ranges if c.speaker in tested else learned,
        )
        for i, c in enumerate(clips)
    ]
    examples: list[Example] = []
    context = multiprocessing.get_context("spawn")  # no torch or onnxruntime state is forked
    with context.Pool(settings.training.threads) as pool:
        for done, result in enumerate(pool.imap(prepare, jobs, chunksize=4), 1):
            examples.extend(result)
            if done % 100 == 0 or done == len(jobs):
                print(f"  prepared {done}/{len(jobs)} clips", file=sys.stderr)
    return examples


def prepared_examples(
    clips: Sequence[corpus.Clip],
    root: Path,
    settings: Settings,
    baseline: bool,
    ranges: AnonymizerConfig,
    cache: Path | None,
) -> list[Example]:
    """``prepare_all``, or what an earlier run with the same inputs left in ``cache``."""
    key = repr(
        (
            [(c.path, c.speaker, c.label) for c in clips],
            str(root.resolve()),
            settings.data,
            settings.split,
            settings.augmentation.anonymized_copies,
            settings.augmentation.evaluation_draws,
            settings.augmentation.training_ranges,
            settings.training.seed,
            ranges,
            baseline,
        )
    )
    if cache is not None and cache.is_file():
        with cache.open("rb") as f:
            stored_key, examples = pickle.load(f)
        if stored_key == key:
            print(f"prepared audio from {cache}", file=sys.stderr)
            return examples
        print(f"{cache} was prepared with other settings: preparing again", file=sys.stderr)
    print(f"preparing {len(clips)} clips from {root}", file=sys.stderr)
    examples = prepare_all(clips, root, settings, baseline, ranges)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(cache.name + ".partial")
        with partial.open("wb") as f:
            pickle.dump((key, examples), f, protocol=pickle.HIGHEST_PROTOCOL)
        partial.replace(cache)
    return examples


# --- training ---------------------------------------------------------------------------------


def build_network(architecture: Architecture) -> Any:
    import torch
    from torch import nn

    c = architecture.channels

    def block(inputs: int, outputs: int, kernel: int, stride: int = 1, dilation: int = 1) -> Any:
        pad = dilation * (kernel - 1) // 2
        return nn.Sequential(
            nn.Conv1d(inputs, outputs, kernel, stride, pad, dilation, bias=False),
            nn.BatchNorm1d(outputs),
            nn.ReLU(),
        )

    class Network(nn.Module):
        """Dilated 1-D convolutions over log-mel frames, each band centred, then mean and
        deviation over time."""

        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.BatchNorm1d(logmel.BANDS)
            self.frames = nn.Sequential(
                block(logmel.BANDS, c, 5, stride=2),
                block(c, c, 3, dilation=2),
                block(c, c, 3, dilation=4),
                block(c, 2 * c, 1),
            )
            self.head = nn.Sequential(
                nn.Linear(4 * c, architecture.embedding),
                nn.ReLU(),
                nn.Dropout(architecture.dropout),
                nn.Linear(architecture.embedding, len(LABELS)),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # each band minus its mean over the segment: a fixed filter on the line (handset,
            # codec, the anonymizer's tilt and ripples) adds a constant per band, which the
            # networks should not learn; the average spectrum still reaches the mix through
            # the linear member's band levels
            x = x - x.mean(dim=2, keepdim=True)
            h = self.frames(self.norm(x))
            deviation = torch.sqrt(h.var(dim=2, unbiased=False) + 1e-5)
            return self.head(torch.cat([h.mean(dim=2), deviation], dim=1))

    return Network()


def _crop(features: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    if features.shape[0] < frames:  # short clips are repeated to length
        features = np.resize(features, (frames, features.shape[1]))
    start = rng.integers(0, features.shape[0] - frames + 1)
    return features[start : start + frames]


def _spec_augment(batch: np.ndarray, a: Augmentation, rng: np.random.Generator) -> None:
    """Zero random bands and stretches (the features have zero mean), in place."""
    for example in batch:  # (bands, frames)
        for _ in range(a.freq_masks):
            width = rng.integers(0, a.freq_mask_bands + 1)
            start = rng.integers(0, example.shape[0] - width + 1)
            example[start : start + width] = 0.0
        for _ in range(a.time_masks):
            width = rng.integers(0, a.time_mask_frames + 1)
            start = rng.integers(0, example.shape[1] - width + 1)
            example[:, start : start + width] = 0.0


def scores(network: Any, examples: Sequence[Example]) -> np.ndarray:
    """Class probabilities of whole clips under torch (model selection only)."""
    import torch

    network.eval()
    with torch.no_grad():
        out = [
            torch.softmax(network(torch.from_numpy(e.features.T[None].copy())), dim=1)[0].numpy()
            for e in examples
        ]
    return np.stack(out)


@dataclass(slots=True)
class Trained:
    network: Any
    best_epoch: int
    validation_uar: dict[str, float]
    history: list[dict[str, float]]


def train(
    settings: Settings, seed: int, train_set: list[Example], validation: list[Example]
) -> Trained:
    """One member of the ensemble, trained from ``seed``."""
    import torch
    from torch import nn

    t, a = settings.training, settings.augmentation
    torch.manual_seed(seed)
    torch.set_num_threads(t.threads)
    rng = np.random.default_rng(seed)
    network = build_network(settings.model)
    by_clip: dict[int, list[Example]] = {}
    for e in train_set:
        by_clip.setdefault(e.clip, []).append(e)
    clip_ids = np.array(sorted(by_clip))
    labels = np.array([by_clip[c][0].label for c in clip_ids])
    counts = np.bincount(labels, minlength=len(LABELS))
    weights = torch.tensor(
        counts.sum() / (len(LABELS) * np.maximum(counts, 1)), dtype=torch.float32
    )
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay
    )
    steps = -(-len(clip_ids) // t.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=t.learning_rate, total_steps=t.epochs * steps
    )
    frames = round(a.crop_seconds * logmel.RATE / logmel.HOP)
    truth = {c: np.array([e.label for e in validation if e.condition == c]) for c in CONDITIONS}
    best: tuple[float, int, dict[str, Any], dict[str, float]] | None = None
    history = []
    for epoch in range(1, t.epochs + 1):
        network.train()
        order = rng.permutation(clip_ids)
        total = 0.0
        for i in range(0, order.size, t.batch):
            chosen = [by_clip[c][rng.integers(len(by_clip[c]))] for c in order[i : i + t.batch]]
            batch = np.stack([_crop(e.features, frames, rng).T for e in chosen])
            _spec_augment(batch, a, rng)
            target = torch.tensor([e.label for e in chosen])
            loss = loss_fn(network(torch.from_numpy(batch)), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(chosen)
        uars = {
            c: metrics.uar(
                truth[c], scores(network, [e for e in validation if e.condition == c]).argmax(1)
            )
            for c in CONDITIONS
        }
        history.append({"epoch": epoch, "loss": total / order.size, **uars})
        print(
            f"  seed {seed} epoch {epoch}: loss {total / order.size:.3f}, validation UAR "
            + ", ".join(f"{c} {100 * u:.1f}%" for c, u in uars.items()),
            file=sys.stderr,
        )
        # the box hears anonymized speech: that is the condition the epoch is chosen on
        if best is None or uars["anonymized"] > best[0]:
            state = {k: v.detach().clone() for k, v in network.state_dict().items()}
            best = (uars["anonymized"], epoch, state, uars)
    assert best is not None
    network.load_state_dict(best[2])
    network.eval()
    return Trained(network, best[1], best[3], history)


@dataclass(frozen=True, slots=True)
class LinearMember:
    """Logistic regression over standardised segment statistics."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (labels, statistics)
    bias: np.ndarray
    cost: float

    def log_probabilities(self, statistics: np.ndarray) -> np.ndarray:
        logits = ((statistics - self.mean) / self.scale) @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


def _matrix(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([e.statistics for e in examples]), np.array([e.label for e in examples])


def train_linear(
    settings: Settings, train_set: list[Example], validation: list[Example]
) -> LinearMember:
    """The linear member, its cost chosen on the anonymized validation clips."""
    from sklearn.linear_model import LogisticRegression

    x, y = _matrix(train_set)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    x_val, y_val = _matrix([e for e in validation if e.condition == "anonymized"])
    best: tuple[float, LinearMember] | None = None
    for cost in settings.model.linear_costs:
        fitted = LogisticRegression(C=cost, class_weight="balanced", max_iter=5000)
        fitted.fit((x - mean) / scale, y)
        # a label absent from training (only in a --limit look) gets no vote
        weights = np.zeros((len(LABELS), x.shape[1]))
        bias = np.full(len(LABELS), -30.0)
        weights[fitted.classes_], bias[fitted.classes_] = fitted.coef_, fitted.intercept_
        member = LinearMember(mean, scale, weights, bias, cost)
        score = metrics.uar(y_val, member.log_probabilities(x_val).argmax(1))
        if best is None or score > best[0]:
            best = (score, member)
    assert best is not None
    return best[1]


@dataclass(frozen=True, slots=True)
class Fusion:
    weight: float  # of the linear member; the networks' mean has 1 - weight
    validation_uar: dict[str, dict[str, float]]  # networks, linear, fused -> condition -> UAR


def choose_fusion(
    settings: Settings, networks: Sequence[Any], linear: LinearMember, validation: list[Example]
) -> Fusion:
    """The linear member's weight that gives the best anonymized validation UAR (the smaller
    weight on a tie)."""

    # each condition's votes once: the networks are the costly part
    votes = {}
    for condition in CONDITIONS:
        chosen = [e for e in validation if e.condition == condition]
        nets = np.mean([np.log(scores(n, chosen) + 1e-12) for n in networks], axis=0)
        x, truth = _matrix(chosen)
        votes[condition] = (nets, linear.log_probabilities(x), truth)

    def uar(weight: float, condition: str) -> float:
        nets, plain, truth = votes[condition]
        return metrics.uar(truth, ((1 - weight) * nets + weight * plain).argmax(1))

    tried = {w: uar(w, "anonymized") for w in settings.model.linear_weights}
    weight = max(tried, key=lambda w: (tried[w], -w))
    figures = {
        name: {c: uar(w, c) for c in CONDITIONS}
        for name, w in (("networks", 0.0), ("linear", 1.0), ("fused", weight))
    }
    print(f"  linear member weight {weight}: validation {figures}", file=sys.stderr)
    return Fusion(weight, figures)


# --- export -----------------------------------------------------------------------------------


def export(
    networks: Sequence[Any],
    linear: LinearMember,
    fusion: Fusion,
    temperature: float,
    path: Path,
    provenance: dict[str, str],
) -> None:
    """The members, their weighted log-probabilities, the temperature and a softmax, as ONNX
    with the metadata the box checks."""
    import onnx
    import torch

    def constant(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float32))

    class Deployed(torch.nn.Module):
        """Power spectra in (as the box computes them), calibrated probabilities out."""

        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(networks)
            self.statistics = functionals.Functionals()
            self.register_buffer("filters", torch.from_numpy(logmel.FILTERS))
            self.register_buffer("mean", constant(linear.mean))
            self.register_buffer("scale", constant(linear.scale))
            self.register_buffer("weights", constant(linear.weights.T))
            self.register_buffer("bias", constant(linear.bias))

        def forward(self, power: torch.Tensor) -> Any:
            energies = torch.log(power @ self.filters + logmel.FLOOR)  # as logmel.log_mel
            energies = energies - energies.mean(dim=(1, 2), keepdim=True)
            frames = energies.transpose(1, 2)
            # the members' mean log-probabilities: a renormalised geometric mean
            votes = [torch.log_softmax(m(frames), dim=1) for m in self.members]
            logits = torch.stack(votes).mean(dim=0)
            # mixed even at weight 0, so that the statistics tensor is always in the graph
            statistics = self.statistics(power)
            z = (statistics - self.mean) / self.scale
            plain = torch.log_softmax(z @ self.weights + self.bias, dim=1)
            logits = (1 - fusion.weight) * logits + fusion.weight * plain
            return torch.softmax(logits / temperature, dim=1), statistics

    dummy = torch.ones(1, 200, logmel.BINS)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        Deployed().eval(),
        (dummy,),
        str(path),
        input_names=["power"],
        output_names=["probabilities", STATISTICS],
        dynamic_axes={"power": {1: "frames"}},
        opset_version=17,
        dynamo=False,
    )
    model = onnx.load(str(path))
    # the box reads the probabilities only; the statistics keep their tensor name inside the
    # graph, so that tests can cut the graph there and check the pitch track
    kept = [o for o in model.graph.output if o.name != STATISTICS]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    meta = {
        "labels": ",".join(LABELS),
        "frontend": FRONTEND,
        "temperature": f"{temperature:.4f}",
        **provenance,
    }
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        sys.exit(f"{path} is {size} bytes, over the {MAX_MODEL_BYTES}-byte budget: shrink [model]")


# --- evaluation -------------------------------------------------------------------------------


@dataclass(slots=True)
class Scored:
    truth: np.ndarray
    probabilities: np.ndarray
    clips: list[int]
    cpu_s: float
    audio_s: float


def score_with_box(model: EmotionModel, examples: Sequence[Example]) -> Scored:
    """Probabilities through the box's own code (front-end and ONNX), and their CPU cost."""
    probabilities, cpu, seconds = [], 0.0, 0.0
    for e in examples:
        assert e.audio is not None
        start = time.process_time()
        result = model.predict(e.audio)
        cpu += time.process_time() - start
        seconds += e.audio.size / model.sample_rate
        if result is None:
            sys.exit(f"clip {e.clip} was not scored: shorter than the minimum or silent")
        probabilities.append(result.probabilities)
    return Scored(
        np.array([e.label for e in examples]),
        np.array(probabilities),
        [e.clip for e in examples],
        cpu,
        seconds,
    )


def frontend_cost(examples: Sequence[Example]) -> float:
    """CPU milliseconds per second of audio of the box's numpy front-end alone."""
    start = time.process_time()
    seconds = 0.0
    for e in examples:
        assert e.audio is not None
        logmel.power_spectrum(e.audio)
        seconds += e.audio.size / logmel.RATE
    return 1000.0 * (time.process_time() - start) / seconds


def summary(truth: np.ndarray, predicted: np.ndarray) -> dict[str, Any]:
    return {
        "uar": metrics.uar(truth, predicted),
        "recall": dict(zip(LABELS, metrics.recalls(truth, predicted).tolist(), strict=True)),
        "confusion": metrics.confusion(truth, predicted).tolist(),
    }


def run_baseline(
    settings: Settings, train_set: list[Example], validation: list[Example], test: list[Example]
) -> dict[str, Any]:
    from models import baseline_egemaps

    def matrix(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([e.egemaps for e in examples]), np.array([e.label for e in examples])

    x_val, y_val = matrix([e for e in validation if e.condition == "anonymized"])
    svm, cost = baseline_egemaps.fit(
        *matrix(train_set), x_val, y_val, settings.baseline.costs, settings.training.seed
    )
    out: dict[str, Any] = {"cost": cost}
    for condition in CONDITIONS:
        x, y = matrix([e for e in test if e.condition == condition])
        out[condition] = summary(y, svm.predict(x))
    return out


# --- main -------------------------------------------------------------------------------------


def processor() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.machine()


def limit_per_speaker(clips: Sequence[corpus.Clip], limit: int) -> list[corpus.Clip]:
    """At most ``limit`` clips per speaker, taking the labels in turn so that each is kept."""
    kept = []
    for speaker in dict.fromkeys(c.speaker for c in clips):
        queues = [[c for c in clips if c.speaker == speaker and c.label == x] for x in LABELS]
        turns = [c for group in itertools.zip_longest(*queues) for c in group if c is not None]
        kept.extend(turns[:limit])
    return kept


def other_split(clips: Sequence[corpus.Clip], test: str, validation: str) -> Split:
    """Test and validation speakers as given; every other speaker of the corpus trains."""
    chosen = {"test": test.split(","), "validation": validation.split(",")}
    known = {c.speaker for c in clips}
    for part, names in chosen.items():
        unknown = sorted(set(names) - known)
        if unknown:
            sys.exit(f"--{part}-speakers: {', '.join(unknown)} not in the corpus")
    if set(chosen["test"]) & set(chosen["validation"]):
        sys.exit("--test-speakers and --validation-speakers share a speaker")
    train = sorted(known - set(chosen["test"]) - set(chosen["validation"]))
    return Split(train, chosen["validation"], chosen["test"])


def shared_dir() -> Path:
    return Path(os.environ.get("CALLVEIL_SHARED", REPO.parent / "shared"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "models" / "emotion.toml")
    parser.add_argument(
        "--data", type=Path, help="folder of labels.csv (default: from the configuration)"
    )
    parser.add_argument(
        "--test-speakers",
        help="comma-separated speakers to test on, instead of [split]; with "
        "--validation-speakers, every other speaker of the corpus trains",
    )
    parser.add_argument("--validation-speakers", help="comma-separated, with --test-speakers")
    parser.add_argument(
        "--site-config",
        type=Path,
        help="a callveil configuration whose [anonymizer] ranges to evaluate under and to "
        "stretch [augmentation] training_ranges to (default: the built-in ranges)",
    )
    parser.add_argument("--limit", type=int, help="clips per speaker, for a quick look")
    parser.add_argument("--epochs", type=int, help="override [training] epochs")
    parser.add_argument("--no-baseline", action="store_true", help="skip openSMILE (no licence)")
    parser.add_argument(
        "--cache",
        type=Path,
        help="file keeping the prepared audio between runs with the same data settings "
        "(preparing is most of a run's time)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for emotion.onnx, emotion.md and emotion.json "
        "(default: the shipped model and card in gateway/models, figures in models/)",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    settings = load_settings(args.config)
    if args.epochs is not None:
        settings = replace(settings, training=replace(settings.training, epochs=args.epochs))
    labels_csv = args.data / "labels.csv" if args.data else shared_dir() / settings.data.labels
    try:
        clips = corpus.read_labels(labels_csv, settings.labels)
    except corpus.CorpusError as exc:
        sys.exit(str(exc))
    if (args.test_speakers is None) != (args.validation_speakers is None):
        parser.error("give --test-speakers and --validation-speakers together")
    if args.test_speakers is not None:
        settings = replace(
            settings, split=other_split(clips, args.test_speakers, args.validation_speakers)
        )
    speakers = {*settings.split.train, *settings.split.validation, *settings.split.test}
    clips = [c for c in clips if c.speaker in speakers]
    if args.limit:
        clips = limit_per_speaker(clips, args.limit)
    model_path = (args.out or SHIPPED_MODEL.parent) / "emotion.onnx"
    card_path = (args.out or SHIPPED_MODEL.parent) / "emotion.md"
    json_path = (args.out or REPO / "models") / "emotion.json"
    baseline = not args.no_baseline

    try:
        ranges = anonymizer_ranges(args.site_config)
    except ConfigError as exc:
        sys.exit(str(exc))
    examples = prepared_examples(clips, labels_csv.parent, settings, baseline, ranges, args.cache)
    role = {**dict.fromkeys(settings.split.train, "train")}
    role |= dict.fromkeys(settings.split.validation, "validation")
    role |= dict.fromkeys(settings.split.test, "test")
    parts: dict[str, list[Example]] = {"train": [], "validation": [], "test": []}
    for e in examples:
        parts[role[clips[e.clip].speaker]].append(e)
    prepared = time.monotonic()

    members = []
    for k in range(settings.model.members):
        print(f"training member {k + 1} of {settings.model.members}", file=sys.stderr)
        members.append(
            train(settings, settings.training.seed + k, parts["train"], parts["validation"])
        )
    networks = [m.network for m in members]
    print("training the linear member", file=sys.stderr)
    linear = train_linear(settings, parts["train"], parts["validation"])
    fusion = choose_fusion(settings, networks, linear, parts["validation"])
    trained_at = time.monotonic()
    provenance = {
        "corpus": labels_csv.parent.name,
        "trained_speakers": ",".join(settings.split.train),
    }
    export(networks, linear, fusion, 1.0, model_path, provenance)
    raw = score_with_box(EmotionModel(model_path), parts["validation"])
    temperature = metrics.fit_temperature(raw.truth, raw.probabilities)
    export(networks, linear, fusion, temperature, model_path, provenance)
    validation = {
        c: metrics.uar(raw.truth[mask], raw.probabilities[mask].argmax(1))
        for c in CONDITIONS
        for mask in [np.array([e.condition == c for e in parts["validation"]])]
    }

    box = EmotionModel(model_path, threads=1)
    figures: dict[str, Any] = {"conditions": {}, "test_predictions": {}}
    cpu = audio = 0.0
    for condition in CONDITIONS:
        scored = score_with_box(box, [e for e in parts["test"] if e.condition == condition])
        cpu, audio = cpu + scored.cpu_s, audio + scored.audio_s
        predicted = scored.probabilities.argmax(1)
        untempered = metrics.tempered(scored.probabilities, 1.0 / temperature)
        figures["conditions"][condition] = {
            **summary(scored.truth, predicted),
            "clips": int(scored.truth.size),
            "ece_untempered": metrics.ece(scored.truth, untempered),
            "ece": metrics.ece(scored.truth, scored.probabilities),
            "nll_untempered": metrics.nll(scored.truth, untempered),
            "nll": metrics.nll(scored.truth, scored.probabilities),
        }
        if condition == "telephone":
            figures["test_predictions"] = {
                clips[i].path: [round(p, 6) for p in probs]
                for i, probs in zip(scored.clips, scored.probabilities.tolist(), strict=True)
            }
    figures["cost"] = {
        "ms_cpu_per_s": 1000.0 * cpu / audio,
        "frontend_ms_cpu_per_s": frontend_cost(parts["test"]),
        "audio_s": audio,
        "processor": processor(),
    }
    if baseline:
        print("baseline: eGeMAPS + linear SVM", file=sys.stderr)
        figures["baseline"] = run_baseline(
            settings, parts["train"], parts["validation"], parts["test"]
        )
    import torch

    figures.update(
        {
            "command": " ".join(["python -m models.train_emotion", *sys.argv[1:]]),
            "settings": asdict(settings),
            "corpus": labels_csv.parent.name,
            "anonymizer": asdict(ranges),
            "training_anonymizer": asdict(training_ranges(settings, ranges)),
            "label_counts": {
                part: [
                    sum(1 for c in {e.clip for e in v} if clips[c].label == label)
                    for label in LABELS
                ]
                for part, v in parts.items()
            },
            "temperature": temperature,
            "validation": {
                "best_epochs": [m.best_epoch for m in members],
                "member_uar": [m.validation_uar for m in members],
                "linear_cost": linear.cost,
                "linear_weight": fusion.weight,
                "fusion_uar": fusion.validation_uar,
                "uar": validation,
                "ece_untempered": metrics.ece(raw.truth, raw.probabilities),
                "ece": metrics.ece(raw.truth, metrics.tempered(raw.probabilities, temperature)),
            },
            "history": [m.history for m in members],
            "model": {
                "bytes": model_path.stat().st_size,
                "parameters": sum(p.numel() for n in networks for p in n.parameters())
                + (linear.weights.size + linear.bias.size if fusion.weight > 0 else 0),
                "statistics": functionals.COUNT,
            },
            "time_s": {
                "prepare": prepared - started,
                "train": trained_at - prepared,
                "total": time.monotonic() - started,
            },
            "threads": settings.training.threads,
            "versions": {"torch": torch.__version__, "python": platform.python_version()},
        }
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    card_path.write_text(card.render(figures), encoding="utf-8")
    print(card.headline(figures), file=sys.stderr)


if __name__ == "__main__":
    main()
