"""The voice anonymizer on real speech: streaming, latency, per-call draws, what it changes."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import AnonymizerConfig, ConfigError, parse_config
from gateway.dsp.anonymize import KNOTS, RIPPLE_ORDERS, Anonymizer, AnonymizerParams, draw_params
from gateway.dsp.features import pitch_track

RATE = 8000
FRAME = 160  # 20 ms
SHIFTS = (0.15, -0.15, 0.1, -0.1, 0.15)  # formant-region moves of a test disguise
# the widest disguise the configuration allows
WIDEST = AnonymizerConfig(
    pitch_semitones=[12.0, 12.0],
    formant_warp=[0.3, 0.3],
    tilt_db=[12, 12],
    formant_jitter=[0.3, 0.3],
)


@pytest.fixture(scope="module")
def speech(telephone_clips: list[np.ndarray]) -> list[np.ndarray]:
    """Two RAVDESS clips as the box hears them, float32, whole 20 ms frames."""
    return [(x[: x.size // FRAME * FRAME] / 32768.0).astype(np.float32) for x in telephone_clips]


def _stream(anonymizer: Anonymizer, x: np.ndarray) -> np.ndarray:
    """20 ms frames in, then flush; returned aligned with the input."""
    out = [anonymizer.process(x[i : i + FRAME]) for i in range(0, x.size, FRAME)]
    y = np.concatenate([*out, anonymizer.flush()])
    return y[anonymizer.latency :]


def _frames(x: np.ndarray, size: int = 256, hop: int = 80) -> np.ndarray:
    starts = np.arange(0, x.size - size, hop)
    return x[starts[:, None] + np.arange(size)] * np.hanning(size)


def _f0(x: np.ndarray) -> np.ndarray:
    return pitch_track(x, RATE).f0


def _cepstra(x: np.ndarray, order: int = 16) -> np.ndarray:
    log_power = np.log(np.abs(np.fft.rfft(_frames(x.astype(np.float64)))) ** 2 + 1e-10)
    return np.fft.irfft(log_power)[:, 1 : order + 1]


def _cepstral_distance_db(a: np.ndarray, b: np.ndarray, voiced: np.ndarray) -> float:
    """Mean cepstral distortion in dB over voiced frames (the mel-cepstral distortion formula)."""
    ca, cb = _cepstra(a), _cepstra(b)
    n = min(voiced.size, ca.shape[0])
    diff = ca[:n][voiced[:n]] - cb[:n][voiced[:n]]
    return float(np.mean(10.0 / np.log(10.0) * np.sqrt(2.0 * np.sum(diff**2, axis=1))))


def test_streaming_equals_whole_signal_at_once(speech):
    params = draw_params(np.random.default_rng(7), AnonymizerConfig())
    x = speech[0]
    framed = _stream(Anonymizer(params), x)
    whole = Anonymizer(params)
    at_once = np.concatenate([whole.process(x), whole.flush()])[whole.latency :]
    assert framed.shape == at_once.shape == x.shape
    np.testing.assert_allclose(framed, at_once, atol=1e-5)
    assert np.abs(framed).max() > 0.01  # it is speech, not silence


def test_latency_is_within_40_ms_and_output_is_aligned_by_it(speech):
    x = speech[0]
    neutral = Anonymizer(AnonymizerParams(pitch_ratio=1.0, warp=0.0, tilt_db=0.0))
    assert 0 < neutral.latency <= 0.040 * RATE
    # with no disguise the aligned output is the input itself
    np.testing.assert_allclose(_stream(neutral, x), x, atol=1e-4)

    # with a disguise the loudness contour lines up with the input's: a misalignment by the
    # latency would be 28 ms; what is left is the smear of the 32 ms window, under 5 ms
    y = _stream(Anonymizer(AnonymizerParams(1.25, 0.12, 4.0)), x)
    env_x = np.sqrt(np.mean(_frames(x, 80, 40) ** 2, axis=1))
    env_y = np.sqrt(np.mean(_frames(y, 80, 40) ** 2, axis=1))
    lags = np.arange(-8, 9)  # +-40 ms in 5 ms steps
    scores = [np.corrcoef(np.roll(env_y, lag), env_x)[0, 1] for lag in lags]
    assert abs(lags[int(np.argmax(scores))]) <= 1
    assert scores[8] > 0.9


def test_draws_stay_in_the_configured_ranges_and_differ():
    config = AnonymizerConfig(
        pitch_semitones=[1.0, 3.0],
        formant_warp=[0.04, 0.08],
        tilt_db=[2, 5],
        formant_jitter=[0.1, 0.2],
        ripple_db=[0.5, 3.0],
    )
    rng = np.random.default_rng()
    draws = [draw_params(rng, config) for _ in range(300)]
    assert all(len(p.knot_shifts) == len(KNOTS) for p in draws)
    assert all(len(p.ripple_db) == len(RIPPLE_ORDERS) for p in draws)
    for values, (low, high) in (
        (np.array([12 * np.log2(p.pitch_ratio) for p in draws]), config.pitch_semitones),
        (np.array([p.warp for p in draws]), config.formant_warp),
        (np.array([p.tilt_db for p in draws]), config.tilt_db),
        (np.array([p.knot_shifts for p in draws]).ravel(), config.formant_jitter),
        (np.array([p.ripple_db for p in draws]).ravel(), config.ripple_db),
    ):
        assert np.all((np.abs(values) >= low - 1e-9) & (np.abs(values) <= high + 1e-9))
        assert (values > 0).mean() > 0.35 and (values < 0).mean() > 0.35  # both directions
    assert len(set(draws)) == len(draws)


@pytest.mark.parametrize("semitones", [4.0, -4.0])
def test_disguise_moves_pitch_and_envelope_but_keeps_the_contour(speech, semitones):
    ratio = 2 ** (semitones / 12)
    for x in speech:
        y = _stream(Anonymizer(AnonymizerParams(ratio, 0.12, 4.0, SHIFTS)), x)
        f0_x, f0_y = _f0(x), _f0(y)
        both = ~np.isnan(f0_x) & ~np.isnan(f0_y)
        assert both.sum() > 30
        ratios = f0_y[both] / f0_x[both]
        assert np.median(ratios) == pytest.approx(ratio, rel=0.03)
        # octave slips of the tracker are gross errors; they must be rare
        fine = np.abs(ratios / np.median(ratios) - 1.0) < 0.2
        assert fine.mean() > 0.9
        # F0 is scaled, so its contour is compared by correlation, which ignores the scale
        assert np.corrcoef(f0_x[both][fine], f0_y[both][fine])[0, 1] > 0.95

        voiced = ~np.isnan(f0_x)
        neutral = _stream(Anonymizer(AnonymizerParams(1.0, 0.0, 0.0)), x)
        assert _cepstral_distance_db(x, neutral, voiced) < 0.5
        assert _cepstral_distance_db(x, y, voiced) > 4.0


def test_ripples_reshape_the_long_term_spectrum_by_their_drawn_shape(speech):
    ripple = (3.0, -2.0, 2.5, -3.0, 1.5, 2.0)
    omega = np.linspace(0.0, np.pi, 129)
    drawn = sum(a * np.cos(k * omega) for k, a in zip(RIPPLE_ORDERS, ripple, strict=True))
    band = (omega > 0.1 * np.pi) & (omega < 0.85 * np.pi)  # 400-3400 Hz, where speech has energy
    for x in speech:
        y = _stream(Anonymizer(AnonymizerParams(1.0, 0.0, 0.0, ripple_db=ripple)), x)
        long_term = [
            10.0 * np.log10(np.mean(np.abs(np.fft.rfft(_frames(s.astype(np.float64)))) ** 2, 0))
            for s in (x, y[: x.size])
        ]
        change = long_term[1] - long_term[0]
        # frame energy is kept, so the shape comes back up to a constant
        assert np.corrcoef(change[band], drawn[band])[0, 1] > 0.9
        assert np.nanmedian(_f0(y[: x.size]) / _f0(x)) == pytest.approx(1.0, abs=0.02)


@pytest.mark.parametrize(
    "kind", ["loud speech", "full-scale noise", "square wave", "silence", "dc offset"]
)
def test_no_nan_inf_or_clipping(speech, kind):
    rng = np.random.default_rng(3)
    n = 4 * RATE
    x = {
        "loud speech": np.clip(np.resize(speech[0], n) * 4.0, -1.0, 1.0),
        "full-scale noise": rng.uniform(-1.0, 1.0, n),
        "square wave": np.sign(np.sin(2 * np.pi * 300 * np.arange(n) / RATE)),
        "silence": np.zeros(n),
        "dc offset": np.full(n, 0.9),
    }[kind].astype(np.float32)
    for seed, config in enumerate([AnonymizerConfig(), AnonymizerConfig(), WIDEST, WIDEST]):
        y = _stream(Anonymizer(draw_params(np.random.default_rng(seed), config)), x)
        assert y.dtype == np.float32 and y.shape == x.shape
        assert np.all(np.isfinite(y))
        assert np.abs(y).max() < 1.0
        if kind == "silence":
            assert np.abs(y).max() < 1e-6


def test_bad_blocks_and_rates_are_refused_with_a_reason():
    anonymizer = Anonymizer(AnonymizerParams(1.2, 0.1, 0.0))
    with pytest.raises(ValueError, match="multiple of 32 samples"):
        anonymizer.process(np.zeros(100, dtype=np.float32))
    with pytest.raises(ValueError, match="multiple of 250 Hz"):
        Anonymizer(AnonymizerParams(1.2, 0.1, 0.0), sample_rate=11025)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"pitch_semitones": [5.0, 2.0]}, ["anonymizer.pitch_semitones", "low <= high"]),
        ({"pitch_semitones": [3.0]}, ["anonymizer.pitch_semitones", "[low, high]"]),
        ({"formant_warp": [0.1, 0.9]}, ["anonymizer.formant_warp[1]", "0 to 0.3"]),
        ({"tilt_db": [-1, 2]}, ["anonymizer.tilt_db[0]", "out of range"]),
        ({"formant_jitter": [0.2, 0.5]}, ["anonymizer.formant_jitter[1]", "0 to 0.4"]),
        ({"ripple_db": [1.0, 8.0]}, ["anonymizer.ripple_db[1]", "0 to 6"]),
        ({"pitch_semitones": "3"}, ["anonymizer.pitch_semitones", "expected a list"]),
        ({"pitch_shift": [1, 2]}, ["unknown key 'anonymizer.pitch_shift'"]),
    ],
)
def test_bad_ranges_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config({"anonymizer": raw})
    for part in expected:
        assert part in str(err.value)
