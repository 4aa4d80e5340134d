"""The framer: odd chunk sizes, gaps, overlaps, and the partial frame at the end."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.dsp.frames import MAX_FILL_SECONDS, Framer
from gateway.events import AudioChunk, CallRef, Role

REF = CallRef.new()


def chunk(pcm: np.ndarray, offset: int, rate: int = 8000) -> AudioChunk:
    return AudioChunk(REF, Role.CUSTOMER, pcm.astype(np.int16), rate, offset)


def test_odd_chunks_give_exact_frames_of_the_same_samples() -> None:
    rng = np.random.default_rng(5)
    pcm = rng.integers(-32768, 32767, 8000 * 3 + 77, dtype=np.int16)
    framer = Framer(8000)
    frames = []
    offset = 0
    for size in rng.integers(1, 700, 200):
        piece = pcm[offset : offset + size]
        if piece.size == 0:
            break
        frames += framer.push(chunk(piece, offset))
        offset += piece.size
    frames += framer.flush()
    assert all(f.pcm.shape == (160,) and f.pcm.dtype == np.float32 for f in frames)
    assert [f.offset for f in frames] == list(range(0, pcm.size, 160))
    joined = np.concatenate([f.pcm for f in frames])
    np.testing.assert_array_equal(joined[: pcm.size], pcm / np.float32(32768))
    assert not joined[pcm.size :].any()  # the last frame is padded with silence


def test_short_gap_is_filled_with_silence() -> None:
    framer = Framer(16000)
    ones = np.full(500, 1000)
    frames = framer.push(chunk(ones, 0, 16000)) + framer.push(chunk(ones, 700, 16000))
    frames += framer.flush()
    joined = np.concatenate([f.pcm for f in frames])
    assert [f.offset for f in frames] == [0, 320, 640, 960]
    assert not joined[500:700].any() and joined[700:1200].all()
    assert framer.filled_samples == 200


def test_long_gap_restarts_framing_at_the_new_offset() -> None:
    framer = Framer(8000)
    gap_end = 100 + round(MAX_FILL_SECONDS * 8000) + 5000
    frames = framer.push(chunk(np.ones(100), 0)) + framer.push(chunk(np.ones(400), gap_end))
    assert [f.offset for f in frames] == [0, gap_end, gap_end + 160]
    assert framer.filled_samples == 0  # nothing was made up for the gap
    assert frames[0].pcm[:100].all() and not frames[0].pcm[100:].any()


def test_overlapping_audio_is_dropped() -> None:
    framer = Framer(8000)
    first = framer.push(chunk(np.full(200, 7), 0))
    second = framer.push(chunk(np.full(200, 9), 150))  # 50 samples repeat what came before
    frames = first + second + framer.flush()
    joined = np.concatenate([f.pcm for f in frames]) * 32768
    np.testing.assert_array_equal(joined[:350], [7] * 200 + [9] * 150)
    assert framer.overlap_samples == 50
    assert framer.push(chunk(np.ones(10), 0)) == []  # entirely old: nothing new
    assert framer.overlap_samples == 60


def test_rates_that_do_not_frame_or_change_are_refused() -> None:
    with pytest.raises(ValueError, match="20 ms frames"):
        Framer(11025)
    framer = Framer(8000)
    with pytest.raises(ValueError, match="one rate"):
        framer.push(chunk(np.ones(10), 0, 16000))
