"""Streaming resampling: identical to one-shot filtering, and its measured response."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.resample import TAPS, Resampler, halfband


def stream(resampler: Resampler, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < x.size:
        n = int(rng.integers(1, 500))
        out.append(resampler.process(x[i : i + n]))
        i += n
    return np.concatenate([*out, resampler.flush()])


def aligned(rate_in: int, rate_out: int, x: np.ndarray) -> np.ndarray:
    """20 ms frames through the resampler, its delay removed."""
    r = Resampler(rate_in, rate_out)
    frame = rate_in // 50
    y = np.concatenate([*(r.process(x[i : i + frame]) for i in range(0, x.size, frame)), r.flush()])
    return y[r.delay :].astype(np.float64)


@pytest.mark.parametrize("seed", [1, 2])
def test_streaming_equals_one_shot_filter_upwards(seed: int) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, 4001)
    h = halfband()
    stuffed = np.zeros(2 * x.size)
    stuffed[::2] = x
    up = Resampler(8000, 16000)
    one_shot = np.convolve(stuffed, 2 * h)[: 2 * x.size + up.delay]
    np.testing.assert_allclose(stream(up, x, seed), one_shot, atol=1e-6)


@pytest.mark.parametrize("seed", [1, 2])
def test_streaming_equals_one_shot_filter_downwards(seed: int) -> None:
    x = np.random.default_rng(seed).uniform(-1, 1, 4001)
    down = Resampler(16000, 8000)
    one_shot = np.convolve(x, halfband())[: x.size + 2 * down.delay : 2]
    np.testing.assert_allclose(stream(down, x, seed), one_shot, atol=1e-6)


def test_filter_response_telephone_band_flat_images_suppressed() -> None:
    h = halfband()
    assert h.size == TAPS and np.allclose(h, h[::-1])  # linear phase
    f = np.linspace(0, 8000, 16001)
    response = np.abs(np.exp(-2j * np.pi * np.outer(f / 16000, np.arange(TAPS))) @ h)
    passband = 20 * np.log10(response[f <= 3400])
    assert passband.max() - passband.min() < 0.01  # dB ripple
    assert 20 * np.log10(response[f >= 4500].max()) < -75


def sine(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * freq * np.arange(round(rate * seconds)) / rate)


def snr_db(signal: np.ndarray, ideal: np.ndarray) -> float:
    edge = 200  # the filter's start-up and run-out, where a finite signal is not a sine
    error = (signal - ideal)[edge:-edge]
    return 10 * np.log10(np.mean(ideal[edge:-edge] ** 2) / np.mean(error**2))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_sines_cross_both_ways_cleanly_and_in_time(freq: float) -> None:
    up = aligned(8000, 16000, sine(freq, 8000))
    assert snr_db(up, sine(freq, 16000)) > 70
    down = aligned(16000, 8000, sine(freq, 16000))
    assert snr_db(down, sine(freq, 8000)) > 70


def test_upsampling_image_and_downsampling_alias_are_below_75_db() -> None:
    up = aligned(8000, 16000, sine(3000.0, 8000))[400:-400]
    spectrum = np.abs(np.fft.rfft(up * np.hanning(up.size)))
    freqs = np.fft.rfftfreq(up.size, 1 / 16000)
    image = spectrum[np.abs(freqs - 5000) < 50].max()
    tone = spectrum[np.abs(freqs - 3000) < 50].max()
    assert 20 * np.log10(image / tone) < -75
    # 5 kHz at 16 kHz would fold onto 3 kHz at 8 kHz
    down = aligned(16000, 8000, sine(5000.0, 16000))[200:-200]
    assert 20 * np.log10(np.sqrt(np.mean(down**2)) / (0.5 / np.sqrt(2))) < -75


def test_same_rate_passes_through_and_odd_rates_are_refused() -> None:
    x = np.arange(10, dtype=np.float32)
    same = Resampler(8000, 8000)
    np.testing.assert_array_equal(same.process(x), x)
    assert same.delay == 0 and same.flush().size == 0
    assert Resampler(8000, 16000).process(np.zeros(0)).size == 0
    with pytest.raises(ValueError, match="8000 and 16000"):
        Resampler(44100, 16000)
    with pytest.raises(ValueError, match="mono"):
        Resampler(8000, 16000).process(np.zeros((2, 10)))
