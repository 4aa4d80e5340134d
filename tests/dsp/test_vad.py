"""Voice activity: silero-vad on real speech, silence and line noise; the speech gate's rules."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.resample import Resampler
from gateway.dsp.vad import SileroVad, SpeechGate, SpeechRun, session

RATE = 8000  # the chain scores the decoded telephone audio
FRAME = 160  # 20 ms


def as_float(pcm: np.ndarray) -> np.ndarray:
    x = (pcm / 32768.0).astype(np.float32)
    return np.concatenate([x, np.zeros(-x.size % FRAME, dtype=np.float32)])


def widen(x: np.ndarray) -> np.ndarray:
    """Aligned 16 kHz version, for the model's other rate."""
    up = Resampler(RATE, 2 * RATE)
    return np.concatenate([up.process(x), up.flush()])[up.delay :]


def line_noise(seconds: float, dbfs: float, seed: int = 0, rate: int = RATE) -> np.ndarray:
    """Pink noise in the telephone band plus mains hum."""
    n = round(seconds * rate)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spectrum *= ((f >= 300) & (f <= 3400)) / np.sqrt(np.maximum(f, 1.0))
    noise = np.fft.irfft(spectrum, n) + 0.01 * np.sin(2 * np.pi * 50 * np.arange(n) / rate)
    return (noise / np.sqrt(np.mean(noise**2)) * 10 ** (dbfs / 20)).astype(np.float32)


def probabilities(x: np.ndarray, rate: int = RATE) -> np.ndarray:
    vad = SileroVad(rate)
    frame = rate // 50
    p: list[float] = []
    for i in range(0, x.size, frame):
        p += vad.push(x[i : i + frame])
    return np.array(p + vad.flush())


def default_gate() -> SpeechGate:
    return SpeechGate(0.5, min_speech=12, min_silence=15, max_frames=500)


def runs_of(gate: SpeechGate, p: np.ndarray) -> list[SpeechRun]:
    return [run for q in p for run in gate.push(float(q))] + gate.flush()


def test_one_session_per_process_on_one_thread() -> None:
    assert session() is session()
    assert session().get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("rate", [8000, 16000])
def test_speech_is_found_in_speech_and_not_in_the_line_noise_around_it(espeak_telephone, rate):
    pad = line_noise(1.28, -50.0)  # 1.28 s: whole frames and whole model windows
    speech = as_float(espeak_telephone)
    x = np.concatenate([pad, speech + line_noise(speech.size / RATE, -50.0, 1), pad])
    p = probabilities(x if rate == RATE else widen(x), rate)
    assert p.size == x.size // FRAME  # one probability per frame, the last ones at flush
    edge = pad.size // FRAME
    assert p[:edge].max() < 0.3 and p[-edge:].max() < 0.3
    assert np.mean(p[edge:-edge] >= 0.5) > 0.6
    runs = runs_of(default_gate(), p)
    assert runs
    assert runs[0].start >= edge - 3 and runs[-1].end <= p.size - edge + 20


@pytest.mark.parametrize("kind", ["digital silence", "line noise", "loud line noise"])
def test_no_speech_in_silence_or_noise(kind: str) -> None:
    x = {
        "digital silence": np.zeros(3 * RATE, dtype=np.float32),
        "line noise": line_noise(3.0, -45.0),
        "loud line noise": line_noise(3.0, -20.0),
    }[kind]
    p = probabilities(x)
    assert p.max() < 0.5
    assert runs_of(default_gate(), p) == []


def test_ravdess_speech_is_found_where_its_energy_is(clean_clips, telephone_clips) -> None:
    for clean, telephone in zip(clean_clips, telephone_clips, strict=True):
        frames = clean[: clean.size // 320 * 320].reshape(-1, 320)  # 20 ms at 16 kHz
        level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
        reference = level >= level.max() - 30  # clean 16 kHz energy
        flags = np.zeros(reference.size, bool)
        for run in runs_of(default_gate(), probabilities(as_float(telephone))):
            flags[run.start : run.end] = True
        assert np.mean(flags[reference]) > 0.85  # speech found
        # the near-silence around the sentence is left out, but for the 300 ms hangover
        spoken = np.flatnonzero(reference)
        outside = np.ones(flags.size, bool)
        outside[spoken[0] - 15 : spoken[-1] + 16] = False
        assert not flags[outside].any()


def test_each_direction_keeps_its_own_state(espeak_telephone) -> None:
    a = as_float(espeak_telephone)
    b = line_noise(a.size / RATE, -40.0)
    alone = [probabilities(a), probabilities(b)]
    vads = [SileroVad(RATE), SileroVad(RATE)]
    together: list[list[float]] = [[], []]
    for i in range(0, a.size, FRAME):
        for k, x in enumerate((a, b)):
            together[k] += vads[k].push(x[i : i + FRAME])
    for k in range(2):
        together[k] += vads[k].flush()
        np.testing.assert_allclose(together[k], alone[k], atol=1e-6)


def test_vad_refuses_what_it_cannot_score() -> None:
    with pytest.raises(ValueError, match="8000 or 16000"):
        SileroVad(44100)
    with pytest.raises(ValueError, match="160 samples"):
        SileroVad(RATE).push(np.zeros(100, dtype=np.float32))


def test_gate_drops_short_bursts_and_bridges_short_pauses() -> None:
    p = np.zeros(200)
    p[20:25] = 0.9  # 100 ms burst: shorter than min_speech
    p[60:100] = 0.9
    p[100:110] = 0.1  # 200 ms pause, shorter than min_silence
    p[110:150] = 0.4  # between the two thresholds: speech goes on
    runs = runs_of(default_gate(), p)
    assert runs == [SpeechRun(58, 152, False)]  # 2 frames of padding either side


def test_gate_cuts_long_speech_and_closes_at_the_end() -> None:
    gate = SpeechGate(0.5, min_speech=5, min_silence=10, max_frames=50)
    runs = runs_of(gate, np.full(130, 0.95))
    assert [(r.start, r.end, r.continued) for r in runs] == [
        (0, 50, False),
        (50, 100, True),
        (100, 130, True),
    ]


def test_gate_refuses_inconsistent_settings() -> None:
    with pytest.raises(ValueError, match="min_speech < max_frames"):
        SpeechGate(0.5, min_speech=50, min_silence=10, max_frames=20)
