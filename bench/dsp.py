"""Speech-stage benchmark on RAVDESS: which VAD and where, and what each stage costs on one core.

``vad``: silero-vad (ONNX on onnxruntime, as gateway/dsp/vad.py runs it) against WebRTC VAD,
both at 8 kHz on 20 ms frames. Each clip goes 16 kHz -> 8 kHz (gateway.dsp.resample) -> G.711
µ-law round trip, and the VAD hears it either before the anonymizer (what the chain does) or
after it (the anonymizer drawn per clip from the default [anonymizer] ranges). The reference
is energy on the clean 16 kHz original: a 20 ms frame is speech when its level is within 30 dB
of the clip's loudest frame. Two conditions:
- clean: the clip as it is; agreement = share of frames where the VAD says what the reference
  says, recall = share of reference speech frames flagged (mean over clips, and the 10th
  percentile over clips: how badly the worst voices fare);
- noisy: 1.5 s of line noise before and after, and the same noise under the clip (pink noise
  in the 300-3400 Hz band plus 50 Hz hum harmonics, at the given SNR to the active speech
  level); recall as above, false alarms = share of the padding (noise alone) flagged.
silero is scored per frame at threshold 0.5 and after the chain's speech gate (the [speech]
defaults); WebRTC VAD per 20 ms frame at aggressiveness 0-3.

``speed``: CPU time of each stage and of one direction's whole chain on 20 ms frames, as the
real-time factor (CPU seconds per audio second) and microseconds per frame, on RAVDESS clips
through G.711 joined into one long direction. onnxruntime runs on one thread (as in the
chain); pin numpy's BLAS with the environment variables below.

Run by hand (needs ../shared or $CALLVEIL_SHARED; WebRTC VAD only for the comparison: pip
install webrtcvad-wheels):
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/dsp.py vad --per-actor 2
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/dsp.py speed --per-actor 1
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gateway.capture.codecs.g711 import ULAW_TABLE
from gateway.config import AnonymizerConfig, SpeechConfig
from gateway.dsp.anonymize import Anonymizer, draw_params
from gateway.dsp.chain import DirectionChain
from gateway.dsp.features import segment_features
from gateway.dsp.frames import Framer
from gateway.dsp.resample import Resampler
from gateway.dsp.vad import SileroVad, SpeechGate, session
from gateway.events import AudioChunk, CallRef, Role

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

TEL = 8000
WIDE = 16000
FRAME_S = 0.02
REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    return Path(os.environ.get("CALLVEIL_SHARED", REPO.parent / "shared"))


# --- data ---------------------------------------------------------------------------------


def clips(per_actor: int) -> list[Path]:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        sys.exit(f"RAVDESS not found at {root}: set CALLVEIL_SHARED to the shared folder")
    with open(root / "labels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["path"])
    by_actor: dict[str, list[str]] = {}
    for row in rows:
        by_actor.setdefault(row["speaker"], []).append(row["path"])
    picked = []
    for paths in by_actor.values():
        step = max(1, len(paths) // per_actor)
        picked += [root / p for p in paths[::step][:per_actor]]
    return picked


def read16k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == WIDE and w.getnchannels() == 1 and w.getsampwidth() == 2
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0


def convert(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Whole-signal resampling, aligned (the resampler's delay removed)."""
    r = Resampler(rate_in, rate_out)
    return np.concatenate([r.process(x), r.flush()])[r.delay :]


def g711(x: np.ndarray) -> np.ndarray:
    pcm = np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")
    codes = np.frombuffer(audioop.lin2ulaw(pcm.tobytes(), 2), dtype=np.uint8)
    return ULAW_TABLE[codes] / 32768.0


def frame_levels(x: np.ndarray, rate: int) -> np.ndarray:
    n = round(rate * FRAME_S)
    frames = x[: x.size // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)


def reference(x16: np.ndarray) -> np.ndarray:
    level = frame_levels(x16, WIDE)
    return level >= level.max() - 30.0


def line_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / TEL)
    spectrum *= ((f >= 300) & (f <= 3400)) / np.sqrt(np.maximum(f, 1.0))
    pink = np.fft.irfft(spectrum, n)
    t = np.arange(n) / TEL
    hum = sum(np.sin(2 * np.pi * 50 * k * t + rng.uniform(0, 6.3)) / k for k in (1, 3, 5))
    noise = pink / np.sqrt(np.mean(pink**2)) + 0.3 * hum
    return noise / np.sqrt(np.mean(noise**2))


# --- the VADs under test -------------------------------------------------------------------

Detector = Callable[[np.ndarray], np.ndarray]  # 8 kHz audio -> one bool per 20 ms frame
FRAME = round(TEL * FRAME_S)


def silero_probabilities(x8: np.ndarray) -> np.ndarray:
    vad = SileroVad(TEL)
    p: list[float] = []
    for i in range(0, x8.size // FRAME * FRAME, FRAME):
        p += vad.push(x8[i : i + FRAME].astype(np.float32))
    return np.array(p + vad.flush())


def silero_raw(x8: np.ndarray) -> np.ndarray:
    return silero_probabilities(x8) >= 0.5


def speech_gate() -> SpeechGate:
    speech = SpeechConfig()
    frames = round(1 / FRAME_S)
    return SpeechGate(
        speech.vad_threshold,
        max(1, round(speech.min_speech_s * frames)),
        max(1, round(speech.min_silence_s * frames)),
        round(speech.max_segment_s * frames),
    )


def silero_gated(x8: np.ndarray) -> np.ndarray:
    gate = speech_gate()
    p = silero_probabilities(x8)
    runs = [run for q in p for run in gate.push(float(q))] + gate.flush()
    flags = np.zeros(p.size, dtype=bool)
    for run in runs:
        flags[run.start : run.end] = True
    return flags


def webrtc(mode: int) -> Detector:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import webrtcvad

    def detect(x8: np.ndarray) -> np.ndarray:
        vad = webrtcvad.Vad(mode)
        pcm = to_int16(x8)
        frames = range(0, pcm.size // FRAME * FRAME, FRAME)
        return np.array([vad.is_speech(pcm[i : i + FRAME].tobytes(), TEL) for i in frames])

    return detect


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")


def anonymized(x8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = Anonymizer(draw_params(rng, AnonymizerConfig()))
    x8 = np.concatenate([x8, np.zeros(-x8.size % FRAME)]).astype(np.float32)
    frames = (a.process(x8[i : i + FRAME]) for i in range(0, x8.size, FRAME))
    return np.concatenate([*frames, a.flush()])[a.latency :]


def run_vad(args: argparse.Namespace) -> None:
    detectors: dict[str, Detector] = {"silero p>=0.5": silero_raw, "silero + gate": silero_gated}
    try:
        detectors |= {f"webrtc mode {m}": webrtc(m) for m in range(4)}
    except ImportError:
        print("webrtcvad not installed: comparing silero only", file=sys.stderr)
    rng = np.random.default_rng(args.seed)
    paths = clips(args.per_actor)
    pad = round(1.5 / FRAME_S)
    # row -> detector -> per clip (agreement, recall, false alarms)
    scores: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for index, path in enumerate(paths):
        x16 = read16k(path)
        ref = reference(x16)
        x8 = convert(x16, WIDE, TEL)[: ref.size * FRAME]
        speech_level = np.sqrt(np.mean(x8[np.repeat(ref, FRAME)] ** 2))
        variants = {"clean": (x8, ref, 0)}
        for snr in args.snr:
            noise = line_noise(x8.size + 2 * pad * FRAME, rng) * speech_level / 10 ** (snr / 20)
            body = np.zeros(noise.size)
            body[pad * FRAME :][: x8.size] = x8
            labels = np.concatenate([np.zeros(pad, bool), ref, np.zeros(pad, bool)])
            variants[f"noisy {snr:g} dB"] = (body + noise, labels, pad)
        for condition, (signal, labels, padding) in variants.items():
            telephone = g711(np.clip(signal, -1, 1))
            heard = {"before anonymizer": telephone, "after anonymizer": anonymized(telephone, rng)}
            for route, y8 in heard.items():
                row = scores.setdefault(f"{condition:<12} {route:<17}", {})
                for name, detect in detectors.items():
                    flags = detect(y8)[: labels.size]
                    row.setdefault(name, []).append(_score(flags, labels[: flags.size], padding))
        print(f"\r{index + 1}/{len(paths)} clips", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"{len(paths)} RAVDESS clips ({args.per_actor} per actor), seed {args.seed}")
    print(f"{'condition / VAD hears':<31}" + "".join(f"{name:>15}" for name in detectors))
    for key, per in scores.items():
        lines = ["agreement"] if key.startswith("clean") else ["false alarms"]
        lines += ["recall", "recall, p10 clip"]
        for i, what in enumerate(lines):
            cells = []
            for name in detectors:
                values = np.array(per[name])
                column = 0 if what == "agreement" else 2 if what == "false alarms" else 1
                if what.endswith("p10 clip"):
                    cells.append(np.percentile(values[:, 1], 10))
                else:
                    cells.append(values[:, column].mean())
            label = key if i == 0 else ""
            print(f"{label:<31}" + "".join(f"{c:>14.1%} " for c in cells) + f" {what}")


def _score(flags: np.ndarray, truth: np.ndarray, padding: int) -> tuple[float, float, float]:
    recall = float(np.mean(flags[truth])) if truth.any() else 1.0
    if padding == 0:
        return float(np.mean(flags == truth)), recall, 0.0
    noise = np.zeros(truth.size, bool)
    noise[:padding] = True
    noise[truth.size - padding :] = True
    return 0.0, recall, float(np.mean(flags[noise]))


# --- speed ---------------------------------------------------------------------------------


def timed(work: Callable[[], object]) -> float:
    """CPU seconds of ``work`` (onnxruntime's thread included)."""
    start = time.process_time()
    work()
    return time.process_time() - start


def run_speed(args: argparse.Namespace) -> None:
    paths = clips(args.per_actor)
    wide = np.concatenate([read16k(p) for p in paths])
    telephone = to_int16(g711(convert(wide, WIDE, TEL)))
    wide_pcm = to_int16(wide)
    seconds = telephone.size / TEL
    frames = telephone.size // FRAME
    x8 = (telephone[: frames * FRAME] / 32768.0).astype(np.float32)
    x16 = (wide_pcm[: frames * 2 * FRAME] / 32768.0).astype(np.float32)
    blocks8 = x8.reshape(frames, FRAME)
    blocks16 = x16.reshape(frames, 2 * FRAME)
    params = draw_params(np.random.default_rng(args.seed), AnonymizerConfig())
    speech = SpeechConfig()
    ref = CallRef.new()
    session()  # loaded once per process, as in the daemon; not counted

    def framer() -> None:
        f = Framer(TEL)
        for i in range(frames):
            f.push(
                AudioChunk(
                    ref, Role.CUSTOMER, telephone[i * FRAME : (i + 1) * FRAME], TEL, i * FRAME
                )
            )

    def stage(make: Callable[[], Callable[[np.ndarray], object]], blocks: np.ndarray) -> None:
        step = make()
        for block in blocks:
            step(block)

    segments: list[np.ndarray] = []

    def gate_and_collect() -> None:
        gate = speech_gate()
        p = silero_probabilities(x8)
        for run in [r for q in p for r in gate.push(float(q))] + gate.flush():
            segments.append(convert(x8[run.start * FRAME : run.end * FRAME], TEL, WIDE))

    gate_and_collect()
    speech_s = sum(s.size for s in segments) / WIDE

    def chain(pcm: np.ndarray, rate: int) -> Callable[[], None]:
        def work() -> None:
            c = DirectionChain(Role.CUSTOMER, params, speech)
            n = rate // 50
            for i in range(0, pcm.size, n):
                c.push(AudioChunk(ref, Role.CUSTOMER, pcm[i : i + n], rate, i))
            c.finish()

        return work

    rows = [
        ("framer (8 kHz chunks -> frames)", timed(framer)),
        (
            "resample 16 -> 8 kHz",
            timed(lambda: stage(lambda: Resampler(WIDE, TEL).process, blocks16)),
        ),
        ("VAD silero, 8 kHz", timed(lambda: stage(lambda: SileroVad(TEL).push, blocks8))),
        ("anonymizer, 8 kHz", timed(lambda: stage(lambda: Anonymizer(params).process, blocks8))),
        (
            "resample 8 -> 16 kHz",
            timed(lambda: stage(lambda: Resampler(TEL, WIDE).process, blocks8)),
        ),
        (
            "features (per speech segment)",
            timed(lambda: [segment_features(s, WIDE) for s in segments]),
        ),
        ("whole chain, 8 kHz input", timed(chain(telephone, TEL))),
        ("whole chain, 16 kHz input", timed(chain(wide_pcm, WIDE))),
    ]
    print(
        f"{len(paths)} RAVDESS clips through G.711 as one direction: {seconds:.1f} s of audio, "
        f"{frames} frames of 20 ms, {speech_s:.1f} s in speech segments"
    )
    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    print(f"onnxruntime intra-op threads 1; {threads}")
    print(f"{'stage':<34}{'CPU s':>8}{'RTF':>9}{'us/frame':>10}")
    for name, cpu in rows:
        print(f"{name:<34}{cpu:>8.2f}{cpu / seconds:>9.4f}{cpu / frames * 1e6:>10.0f}")
    print("features run on speech segments only; their row is per 20 ms of all audio, as the rest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    vad = sub.add_parser("vad", help="silero-vad against WebRTC VAD, before and after disguise")
    vad.add_argument("--per-actor", type=int, default=2, help="clips per RAVDESS actor")
    vad.add_argument("--snr", type=float, nargs="+", default=[20.0, 10.0], help="noisy SNRs, dB")
    vad.add_argument("--seed", type=int, default=1)
    speed = sub.add_parser("speed", help="CPU cost of each stage and of the chain")
    speed.add_argument("--per-actor", type=int, default=1, help="clips per RAVDESS actor")
    speed.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.command == "vad":
        run_vad(args)
    else:
        run_speed(args)


if __name__ == "__main__":
    main()
