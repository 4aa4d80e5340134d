"""The per-direction chain and the per-call pairing, end to end on real speech."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.config import AnonymizerConfig, ConfigError, SpeechConfig, parse_config
from gateway.dsp.anonymize import AnonymizerParams
from gateway.dsp.chain import CallSpeech, DirectionChain, SpeechSegment, overlap
from gateway.dsp.features import pitch_track
from gateway.dsp.resample import Resampler
from gateway.events import AudioChunk, CallRef, Role

RATE = 8000
WIDE = 16000
DISGUISE = AnonymizerParams(pitch_ratio=2 ** (4 / 12), warp=0.1, tilt_db=3.0)


def chunks(
    pcm: np.ndarray, role: Role, ref: CallRef, rate: int = RATE, offset: int = 0, seed: int = 3
) -> list[AudioChunk]:
    """``pcm`` in chunks of random sizes, as capture hands it on."""
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < pcm.size:
        n = int(rng.integers(40, 700))
        out.append(AudioChunk(ref, role, pcm[i : i + n], rate, offset + i))
        i += n
    return out


def run(chain: DirectionChain, pieces: list[AudioChunk]) -> tuple[list[SpeechSegment], object]:
    segments = [s for c in pieces for s in chain.push(c)]
    tail, summary = chain.finish()
    return segments + tail, summary


def plain_wide(pcm8: np.ndarray) -> np.ndarray:
    """The input at 16 kHz without a disguise, aligned."""
    up = Resampler(RATE, WIDE)
    return np.concatenate([up.process(pcm8 / 32768.0), up.flush()])[up.delay :]


def test_ravdess_through_g711_gives_anonymized_aligned_segments(clean_clips, telephone_clips):
    clean, pcm = clean_clips[0], telephone_clips[0]
    segments, summary = run(
        DirectionChain(Role.CUSTOMER, DISGUISE, SpeechConfig()),
        chunks(pcm, Role.CUSTOMER, CallRef.new()),
    )
    assert segments
    for s in segments:
        assert s.role is Role.CUSTOMER and s.pcm.dtype == np.float32
        assert s.pcm.size == round(s.duration * WIDE)
        assert s.start >= 0 and s.start + s.duration <= pcm.size / RATE + 0.02
    # the segments cover the speech of the clean recording
    frames = clean[: clean.size // 320 * 320].reshape(-1, 320)
    level = 10 * np.log10(np.mean(frames**2, axis=1) + 1e-12)
    speech = np.flatnonzero(level >= level.max() - 30) * 0.02
    covered = [any(s.start <= t < s.start + s.duration for s in segments) for t in speech]
    assert np.mean(covered) > 0.85
    plain = plain_wide(pcm)
    for s in segments:
        start = round(s.start * WIDE)
        original = plain[start : start + s.pcm.size]
        # aligned: the loudness contours match at zero lag
        env = [
            np.sqrt(np.mean(v[: v.size // 160 * 160].reshape(-1, 160) ** 2, axis=1))
            for v in (s.pcm, original)
        ]
        assert np.corrcoef(*env)[0, 1] > 0.8
        # anonymized: not the input, and its pitch is the disguise's
        assert not np.allclose(s.pcm, original, atol=0.01)
        f0_out, f0_in = pitch_track(s.pcm, WIDE).f0, pitch_track(original, WIDE).f0
        both = ~np.isnan(f0_out) & ~np.isnan(f0_in)
        assert np.median(f0_out[both] / f0_in[both]) == pytest.approx(
            DISGUISE.pitch_ratio, rel=0.03
        )
    assert summary.duration == pytest.approx(pcm.size / RATE, abs=0.02)
    assert summary.speech == pytest.approx(sum(s.duration for s in segments))
    assert summary.silence_ratio == pytest.approx(1 - summary.speech / summary.duration)
    assert summary.segments == len(segments)


def test_chunking_does_not_change_the_result_and_offsets_are_relative(telephone_clips):
    pcm = telephone_clips[1]
    ref = CallRef.new()
    whole, _ = run(
        DirectionChain(Role.OPERATOR, DISGUISE, SpeechConfig()),
        [AudioChunk(ref, Role.OPERATOR, pcm, RATE, 0)],
    )
    pieces, _ = run(
        DirectionChain(Role.OPERATOR, DISGUISE, SpeechConfig()), chunks(pcm, Role.OPERATOR, ref)
    )
    assert [(s.start, s.duration) for s in whole] == [(s.start, s.duration) for s in pieces]
    for a, b in zip(whole, pieces, strict=True):
        np.testing.assert_array_equal(a.pcm, b.pcm)
    # the same audio 0.96 s later (a short gap, filled with silence) lands 0.96 s later
    later, _ = run(
        DirectionChain(Role.OPERATOR, DISGUISE, SpeechConfig()),
        chunks(pcm, Role.OPERATOR, ref, offset=round(0.96 * RATE)),
    )
    assert len(later) == len(whole)
    for a, b in zip(whole, later, strict=True):
        assert b.start - a.start == pytest.approx(0.96, abs=0.041)


def test_wideband_input_takes_the_same_path(clean_clips, telephone_clips):
    wide = np.round(clean_clips[0] * 32768).astype(np.int16)  # as a G.722 or L16 stream
    ref = CallRef.new()
    from_wide, _ = run(
        DirectionChain(Role.CUSTOMER, DISGUISE, SpeechConfig()),
        chunks(wide, Role.CUSTOMER, ref, rate=WIDE),
    )
    from_narrow, _ = run(
        DirectionChain(Role.CUSTOMER, DISGUISE, SpeechConfig()),
        chunks(telephone_clips[0], Role.CUSTOMER, ref),
    )
    assert len(from_wide) == len(from_narrow)
    for a, b in zip(from_wide, from_narrow, strict=True):
        assert a.start == pytest.approx(b.start, abs=0.1)
        assert a.pcm.size == round(a.duration * WIDE)


def test_long_speech_is_cut_and_a_long_gap_starts_afresh(espeak_telephone, telephone_clips):
    config = SpeechConfig(min_silence_s=1.0, max_segment_s=2.0)
    ref = CallRef.new()
    gap_at = espeak_telephone.size + 5 * RATE  # five seconds with no audio at all
    pieces = chunks(espeak_telephone, Role.CUSTOMER, ref) + chunks(
        telephone_clips[1], Role.CUSTOMER, ref, offset=gap_at
    )
    segments, summary = run(DirectionChain(Role.CUSTOMER, DISGUISE, config), pieces)
    first = [s for s in segments if s.start < gap_at / RATE]
    second = [s for s in segments if s.start >= gap_at / RATE]
    assert len(first) >= 2 and second
    assert all(s.duration <= 2.0 + 1e-9 for s in segments)
    assert not first[0].continued and first[1].continued
    assert first[1].start == pytest.approx(first[0].start + first[0].duration)
    assert second[-1].start + second[-1].duration <= gap_at / RATE + telephone_clips[1].size / RATE
    # the unfilled gap is not audio: it counts in neither speech nor silence
    heard = (espeak_telephone.size + telephone_clips[1].size) / RATE
    assert summary.duration == pytest.approx(heard, abs=0.04)
    assert summary.end == pytest.approx((gap_at + telephone_clips[1].size) / RATE, abs=0.02)


def test_two_directions_overtalk_and_silence(telephone_clips):
    ref = CallRef.new()
    call = CallSpeech(SpeechConfig(), AnonymizerConfig())
    operator = telephone_clips[0]
    customer = np.concatenate([np.zeros(round(1.0 * RATE), np.int16), telephone_clips[1]])
    segments = [s for c in chunks(operator, Role.OPERATOR, ref) for s in call.push(c)]
    segments += [s for c in chunks(customer, Role.CUSTOMER, ref) for s in call.push(c)]
    tail, summary = call.finish()
    segments += tail
    assert {s.role for s in segments} == {Role.OPERATOR, Role.CUSTOMER}
    # an independent count on a 10 ms grid
    grid = np.arange(0, summary.duration, 0.01) + 0.005
    talking = {
        role: np.any(
            [(grid >= s.start) & (grid < s.start + s.duration) for s in segments if s.role is role],
            axis=0,
        )
        for role in (Role.OPERATOR, Role.CUSTOMER)
    }
    both = talking[Role.OPERATOR] & talking[Role.CUSTOMER]
    neither = ~talking[Role.OPERATOR] & ~talking[Role.CUSTOMER]
    assert summary.overtalk_ratio == pytest.approx(both.mean(), abs=0.01)
    assert summary.silence_ratio == pytest.approx(neither.mean(), abs=0.01)
    assert 0.05 < summary.overtalk_ratio < 0.5 and 0.1 < summary.silence_ratio < 0.6
    assert summary.duration == pytest.approx(customer.size / RATE, abs=0.02)
    assert {d.role for d in summary.directions} == {Role.OPERATOR, Role.CUSTOMER}


def test_each_direction_gets_its_own_disguise(telephone_clips):
    ref = CallRef.new()
    call = CallSpeech(SpeechConfig(), AnonymizerConfig())
    segments = [
        s
        for role in (Role.OPERATOR, Role.CUSTOMER)
        for c in chunks(telephone_clips[1], role, ref)
        for s in call.push(c)
    ]
    segments += call.finish()[0]
    operator = [s for s in segments if s.role is Role.OPERATOR]
    customer = [s for s in segments if s.role is Role.CUSTOMER]
    # the same words, found in the same places (speech is found before the disguise) ...
    assert [(s.start, s.duration) for s in operator] == [(s.start, s.duration) for s in customer]
    # ... in two different voices
    for a, b in zip(operator, customer, strict=True):
        assert not np.allclose(a.pcm, b.pcm, atol=0.01)


def test_overlap_of_hand_made_timelines():
    operator = [(0.0, 2.0), (5.0, 6.0)]
    customer = [(1.5, 3.0), (5.5, 8.0)]
    assert overlap([operator, customer], 10.0) == pytest.approx((1.0, 6.0))
    assert overlap([operator], 10.0) == pytest.approx((0.0, 3.0))
    assert overlap([], 10.0) == (0.0, 0.0)


def test_chunks_of_another_call_or_role_are_refused(telephone_clips):
    pcm = telephone_clips[0][:800]
    call = CallSpeech(SpeechConfig(), AnonymizerConfig())
    call.push(AudioChunk(CallRef.new(), Role.OPERATOR, pcm, RATE, 0))
    with pytest.raises(ValueError, match="another call"):
        call.push(AudioChunk(CallRef.new(), Role.OPERATOR, pcm, RATE, 800))
    chain = DirectionChain(Role.OPERATOR, DISGUISE, SpeechConfig())
    with pytest.raises(ValueError, match="customer chunk was sent to the operator chain"):
        chain.push(AudioChunk(CallRef.new(), Role.CUSTOMER, pcm, RATE, 0))


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"vad_threshold": 0.1}, ["speech.vad_threshold", "out of range"]),
        ({"analysis_rate": 22050}, ["speech.analysis_rate", "use 8000 or 16000"]),
        ({"max_segment_s": "10"}, ["speech.max_segment_s", "wrong type"]),
        ({"min_silence": 0.3}, ["unknown key 'speech.min_silence'", "speech.min_silence_s"]),
    ],
)
def test_bad_speech_settings_name_the_key(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_config({"speech": raw})
    for part in expected:
        assert part in str(err.value)


def test_analysis_at_the_telephone_rate(telephone_clips):
    config = parse_config({"speech": {"analysis_rate": 8000}}).speech
    segments, _ = run(
        DirectionChain(Role.OPERATOR, DISGUISE, config),
        chunks(telephone_clips[0], Role.OPERATOR, CallRef.new()),
    )
    assert segments and all(s.pcm.size == round(s.duration * RATE) for s in segments)
