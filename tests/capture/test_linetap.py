"""Calls on a two-channel line tap, with real (synthesised) speech."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from gateway.capture.linetap import LineTapSession
from gateway.config import parse_config
from gateway.events import AudioChunk, CallEnded, CallStarted, EndReason, Policy, Role

RATE = 8000


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        pytest.skip("espeak-ng and sox are needed (scripts/setup installs them)")
    folder = tmp_path_factory.mktemp("speech")
    wav, raw = folder / "s.wav", folder / "s.raw"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "it",
            "-w",
            str(wav),
            "Buongiorno, vorrei informazioni sulla bolletta.",
        ],
        check=True,
    )
    subprocess.run(
        ["sox", str(wav), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed", str(raw)],
        check=True,
    )
    return np.fromfile(raw, dtype="<i2")


def two_channel_call(speech: np.ndarray, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    n = int(seconds * RATE)
    rng = np.random.default_rng(7)
    a = (rng.normal(0, 10, n)).astype(np.int16)  # line noise around -70 dBFS
    b = (rng.normal(0, 10, n)).astype(np.int16)
    a[RATE : RATE + len(speech)] = speech
    b[2 * RATE + len(speech) : 2 * RATE + 2 * len(speech)] = speech
    return a, b


def feed_all(session: LineTapSession, a: np.ndarray, b: np.ndarray) -> list:
    events = []
    block = RATE // 50
    for i in range(0, len(a) - block + 1, block):
        events += session.feed(a[i : i + block], b[i : i + block])
    return events + session.finish()


def config(**privacy):
    return parse_config({"privacy": privacy, "soundcard": {"end_silence_s": 3.0}})


def test_two_calls_with_roles_and_trim(speech) -> None:
    a1, b1 = two_channel_call(speech, 4 + 2 * len(speech) / RATE + 5)
    a, b = np.concatenate([a1, a1]), np.concatenate([b1, b1])
    session = LineTapSession(config(sample_rate=1.0, trim_seconds=1.0), RATE)
    events = feed_all(session, a, b)
    started = [e for e in events if isinstance(e, CallStarted)]
    ended = [e for e in events if isinstance(e, CallEnded)]
    assert len(started) == len(ended) == 2
    assert all(e.reason is EndReason.LINE_SILENT for e in ended)
    assert started[0].roles == frozenset({Role.OPERATOR, Role.CUSTOMER})
    first = started[0].ref
    operator = np.concatenate(
        [
            e.pcm
            for e in events
            if isinstance(e, AudioChunk) and e.ref == first and e.role is Role.OPERATOR
        ]
    )
    # the call starts at the first active block (speech at 1 s); one second is cut from there
    start = int(np.argmax(np.abs(a1) > 100)) // (RATE // 50) * (RATE // 50)
    assert np.array_equal(operator[:RATE], a1[start + RATE : start + 2 * RATE])
    for e in ended:
        assert all(d.trimmed_samples == RATE for d in e.directions)


def test_unsampled_calls_hand_on_no_audio(speech) -> None:
    a, b = two_channel_call(speech, 10)
    events = feed_all(LineTapSession(config(sample_rate=0.0), RATE), a, b)
    assert [e.policy for e in events if isinstance(e, CallStarted)] == [Policy.DROP]
    assert not any(isinstance(e, AudioChunk) for e in events)


def test_line_noise_alone_starts_no_call() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 10, RATE * 5).astype(np.int16)
    assert feed_all(LineTapSession(config(sample_rate=1.0), RATE), noise, noise) == []


def test_operator_channel_is_configurable(speech) -> None:
    a, b = two_channel_call(speech, 10)
    cfg = parse_config(
        {"privacy": {"sample_rate": 1.0, "trim_seconds": 0.0}, "soundcard": {"operator_channel": 1}}
    )
    events = feed_all(LineTapSession(cfg, RATE), a, b)
    first_chunk = next(e for e in events if isinstance(e, AudioChunk))
    assert first_chunk.role is Role.CUSTOMER  # channel 0 is the customer now
