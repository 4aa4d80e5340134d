"""The emotion model's card (gateway/models/emotion.md), written from the figures of a run."""

from __future__ import annotations

from typing import Any

from gateway.models import logmel
from gateway.models.emotion import LABELS, MIN_SECONDS

_CONDITION_NAMES = {
    "telephone": "telephone band (8 kHz, G.711 A-law)",
    "anonymized": "telephone band, then the anonymizer",
}


def _ranges(anonymizer: dict[str, list[float]]) -> str:
    return ", ".join(f"{key} {low:g}-{high:g}" for key, (low, high) in anonymizer.items())


def _speakers(names: list[str]) -> str:
    """``01-18`` for a run of consecutive numbers, else the names listed."""
    if all(n.isdigit() for n in names) and [int(n) for n in names] == list(
        range(int(names[0]), int(names[0]) + len(names))
    ):
        return f"{names[0]}-{names[-1]}"
    return ", ".join(names)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def headline(f: dict[str, Any]) -> str:
    parts = [
        f"{c}: model UAR {_pct(f['conditions'][c]['uar'])}%"
        + (f", eGeMAPS+SVM {_pct(f['baseline'][c]['uar'])}%" if "baseline" in f else "")
        for c in _CONDITION_NAMES
    ]
    cost = f"{f['cost']['ms_cpu_per_s']:.2f} ms CPU per second of audio"
    return "; ".join([*parts, cost])


def _recall_table(f: dict[str, Any]) -> list[str]:
    systems = [("model", f["conditions"])]
    if "baseline" in f:
        systems.append(("eGeMAPS + linear SVM", f["baseline"]))
    head = "| system | condition | UAR % | " + " | ".join(LABELS) + " |"
    lines = [head, "|" + " --- |" * (3 + len(LABELS))]
    for name, figures in systems:
        for condition, title in _CONDITION_NAMES.items():
            row = figures[condition]
            recalls = " | ".join(_pct(row["recall"][label]) for label in LABELS)
            lines.append(f"| {name} | {title} | **{_pct(row['uar'])}** | {recalls} |")
    return lines


def _confusion(matrix: list[list[int]]) -> list[str]:
    lines = [
        "| true \\ predicted | " + " | ".join(LABELS) + " |",
        "|" + " --- |" * (1 + len(LABELS)),
    ]
    for label, row in zip(LABELS, matrix, strict=True):
        lines.append(f"| {label} | " + " | ".join(str(n) for n in row) + " |")
    return lines


def render(f: dict[str, Any]) -> str:
    s = f["settings"]
    v = f["validation"]
    split = s["split"]
    counts = f["label_counts"]
    cost = f["cost"]
    minutes = f["time_s"]["total"] / 60
    command = f["command"]
    lines = [
        "# Emotion model card",
        "",
        "`emotion.onnx` scores one speech segment of one side of a call: probabilities for "
        f"{', '.join(LABELS)}, and arousal and valence derived from them (mapping in "
        "`emotion.py`). Written by `models/train_emotion.py`; every figure below comes from "
        "one run of it and is also in `models/emotion.json`.",
        "",
        "## Training data and licence",
        f"- Corpus: **{f['corpus']}** (`{s['data']['labels']}` under the shared data folder): "
        "RAVDESS, Livingstone & Russo (2018), PLoS ONE 13(5): e0196391; acted North American "
        "English, two sentences, 24 professional actors (12 F, 12 M).",
        "- Licence: **CC BY-NC-SA 4.0, non-commercial**. A model trained on it inherits that "
        "restriction: this model may be used for evaluation, not in a commercial deployment. "
        "Retrain on data licensed for the purpose: the script takes any corpus described by a "
        "`labels.csv` (`path`, `speaker`, `emotion`) and a `[labels]` table in its "
        "configuration.",
        f"- Split by speaker (actors): train {_speakers(split['train'])}, "
        f"validation {', '.join(split['validation'])} (epochs, the linear member's cost and "
        "weight, temperature, SVM cost), "
        f"test {', '.join(split['test'])} (used only for the figures below).",
        "- Labels: RAVDESS calm is merged into neutral; clips per label "
        f"({', '.join(LABELS)}): train {counts['train']}, validation {counts['validation']}, "
        f"test {counts['test']}.",
        "",
        "## What the model hears",
        "Each clip is set to the nominal telephone speech level (active speech level -26 dBFS, "
        "ITU-T P.56; the corpus was recorded from about -70 to -15 dBFS), resampled to 8 kHz, "
        "passed through a G.711 A-law round trip (Python's encoder, callveil's decoder), "
        "trimmed to its speech (frames within "
        f"{s['data']['trim_db']:g} dB of the loudest, 100 ms margin, standing in for the voice "
        "activity detection) and raised to the 16 kHz analysis rate. The anonymizer "
        f"(`gateway/dsp/anonymize.py`, `[anonymizer]` ranges {_ranges(f['anonymizer'])}) runs "
        "on the 8 kHz signal, "
        f"each time with its own random disguise: {s['augmentation']['anonymized_copies']} "
        "disguised copies of every training clip (plus the undisguised one) and "
        f"{s['augmentation']['evaluation_draws']} per validation clip, drawn from the ranges "
        f"{_ranges(f['training_anonymizer'])} (`[augmentation.training_ranges]` of "
        "`models/emotion.toml`, which hold the ones above and milder disguises too); "
        f"{s['augmentation']['evaluation_draws']} per test clip, drawn from the ranges above.",
        "",
        f"Front-end (`gateway/models/logmel.py`): {logmel.BANDS} log-mel bands "
        f"{logmel.F_MIN:g}-{logmel.F_MAX:g} Hz, {1000 * logmel.WINDOW // logmel.RATE} ms "
        f"window, {1000 * logmel.HOP // logmel.RATE} ms hop, minus the segment's mean; numpy "
        "computes the power spectrum, the graph's first nodes the bands and the logarithm. "
        f"Network: {s['model']['members']} convolutional members trained alike from "
        "consecutive seeds, their log-probabilities averaged in the graph"
        + (
            f", then mixed with a linear member's (weight {v['linear_weight']:g}, chosen on "
            "validation): logistic regression "
            f"(C = {v['linear_cost']:g}) over {f['model']['statistics']} statistics of the segment "
            "computed in the "
            "graph (`models/functionals.py`: band levels, their spread and movement, loudness "
            "contour, a pitch track from the autocorrelation)"
            if v["linear_weight"] > 0
            else " (a linear member over segment statistics was tried and got weight 0 on "
            "validation)"
        )
        + ". Each convolutional member: each band minus its mean over the segment, input "
        "normalisation, four 1-D convolution layers "
        f"({s['model']['channels']} channels, the first with stride 2, dilations 1-2-4), mean and "
        f"standard deviation over time, a {s['model']['embedding']}-unit layer. Softmax with the "
        f"calibration temperature folded in; {f['model']['parameters']:,} parameters in all, "
        f"{f['model']['bytes'] / 1024:.0f} KiB. Trained with cropped "
        f"({s['augmentation']['crop_seconds']:g} s) and SpecAugment-masked examples, "
        "class-weighted cross-entropy, AdamW, "
        f"{s['training']['epochs']} epochs; each member keeps the epoch with its best validation "
        "UAR under anonymization (epochs "
        f"{', '.join(str(e) for e in v['best_epochs'])}). Validation UAR, telephone band / "
        "anonymized, in %: each convolutional member alone "
        + ", ".join("/".join(_pct(m[c]) for c in _CONDITION_NAMES) for m in v["member_uar"])
        + "; "
        + "; ".join(
            f"{name} " + "/".join(_pct(v["fusion_uar"][key][c]) for c in _CONDITION_NAMES)
            for key, name in (
                ("networks", "their mean"),
                ("linear", "the linear member alone"),
                ("fused", "the mix"),
            )
        )
        + "; the exported model through the box's code "
        + "/".join(_pct(v["uar"][c]) for c in _CONDITION_NAMES)
        + ".",
        "",
        f"Segments shorter than {MIN_SECONDS:g} s or quieter than the silence threshold are not "
        "scored (`EmotionModel.predict` returns None); segments longer than 20 s are scored in "
        "equal pieces whose probabilities are averaged by length.",
        "",
        "## Results on the test speakers",
        "Unweighted average recall (UAR, the mean of the per-label recalls; chance is "
        f"{100 / len(LABELS):.1f}%) and per-label recall, in %. "
        + ", ".join(
            f"{_CONDITION_NAMES[c]}: {f['conditions'][c]['clips']} scored segments"
            for c in _CONDITION_NAMES
        )
        + ". The baseline is openSMILE eGeMAPSv02 functionals and a linear SVM "
        "(`models/baseline_egemaps.py`) trained on the same clips and copies"
        + (f", cost {f['baseline']['cost']:g} chosen on validation." if "baseline" in f else "."),
        "",
        *_recall_table(f),
        "",
        "With four test speakers the figures move by several points between splits and runs; "
        "read differences of a few points as noise.",
        "",
    ]
    for condition, title in _CONDITION_NAMES.items():
        lines += [
            f"### Confusion matrix, {title}",
            "",
            *_confusion(f["conditions"][condition]["confusion"]),
            "",
        ]
    lines += [
        "## Calibration",
        f"Temperature {f['temperature']:.2f}, fitted on the validation speakers (both "
        "conditions) by minimising the negative log-likelihood, is part of the exported graph. "
        "Expected calibration error (top label, 10 equal-width bins) and negative "
        "log-likelihood on the test speakers:",
        "",
        "| condition | ECE before | ECE after | NLL before | NLL after |",
        "| --- | --- | --- | --- | --- |",
        *[
            f"| {title} | {row['ece_untempered']:.3f} | {row['ece']:.3f} "
            f"| {row['nll_untempered']:.3f} | {row['nll']:.3f} |"
            for title, row in ((t, f["conditions"][c]) for c, t in _CONDITION_NAMES.items())
        ],
        "",
        "## Cost",
        f"**{cost['ms_cpu_per_s']:.2f} ms of CPU per second of audio** on one core "
        "(`EmotionModel(threads=1).predict`: front-end and inference; process CPU time over "
        f"{cost['audio_s']:.0f} s of test segments, both conditions), of which the numpy "
        f"power spectrum is {cost['frontend_ms_cpu_per_s']:.2f} ms. Processor: "
        f"{cost['processor']}. The box needs numpy "
        "and onnxruntime only.",
        "",
        "## Reproduce",
        "From the repository root, with the development packages installed (torch, onnx, "
        "onnxscript, scikit-learn, opensmile) and the corpus under the shared data folder:",
        "",
        "```",
        f".venv/bin/{command}",
        "```",
        "",
        "It writes this card, `emotion.onnx` and `emotion.json` into the `--out` folder (the "
        "shipped files are copies of them); `--cache` keeps the prepared audio for the next run "
        f"with the same data settings. This run took {minutes:.0f} min wall-clock with "
        f"{f['threads']} processes/threads (preparing the audio "
        f"{f['time_s']['prepare'] / 60:.0f} min, training {f['time_s']['train'] / 60:.0f} min); "
        f"Python {f['versions']['python']}, torch {f['versions']['torch']}, seed "
        f"{s['training']['seed']} (configuration `models/emotion.toml`).",
        "",
        "## Limits",
        "- Acted emotions in read sentences; spontaneous call-center speech is less intense "
        "and the figures above overstate what the box will see.",
        "- English speech; Italian calls differ in prosody.",
        "- A segment's probabilities describe how it sounds, not what the speaker feels; they "
        "are for aggregates over many calls, never for judging one person.",
        "",
    ]
    return "\n".join(lines)
