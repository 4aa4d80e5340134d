"""The emotion model's training copies are drawn from ranges that hold the deployed ones."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.config import AnonymizerConfig
from tests.conftest import REPO

TRAINING_CONFIG = REPO / "models" / "emotion.toml"


@pytest.fixture(scope="module")
def train_emotion():
    pytest.importorskip("scipy", reason="scipy (a development dependency) is not installed")
    from models import train_emotion

    return train_emotion


def test_training_copies_cover_the_defaults_and_milder_disguises(train_emotion) -> None:
    settings = train_emotion.load_settings(TRAINING_CONFIG)
    deployed = AnonymizerConfig()
    learned = train_emotion.training_ranges(settings, deployed)
    own = settings.augmentation.training_ranges
    for f in fields(AnonymizerConfig):
        low, high = getattr(learned, f.name)
        assert low <= getattr(deployed, f.name)[0] and high >= getattr(deployed, f.name)[1]
        assert [low, high] == [
            min(getattr(own, f.name)[0], getattr(deployed, f.name)[0]),
            max(getattr(own, f.name)[1], getattr(deployed, f.name)[1]),
        ]
    # the shipped settings reach below the deployed sizes: the networks hear milder disguises
    assert learned.pitch_semitones[0] < deployed.pitch_semitones[0]
    assert learned.formant_jitter[0] < deployed.formant_jitter[0]


def test_a_site_with_wider_ranges_trains_on_them(train_emotion) -> None:
    settings = train_emotion.load_settings(TRAINING_CONFIG)
    site = AnonymizerConfig(pitch_semitones=[4.0, 8.0], formant_warp=[0.25, 0.3])
    learned = train_emotion.training_ranges(settings, site)
    own = settings.augmentation.training_ranges
    assert learned.pitch_semitones == [own.pitch_semitones[0], 8.0]
    assert learned.formant_warp[1] == 0.3


def test_bad_training_ranges_name_the_section_and_key(train_emotion, tmp_path: Path) -> None:
    text = TRAINING_CONFIG.read_text(encoding="utf-8")
    bad = tmp_path / "emotion.toml"
    bad.write_text(re.sub(r"formant_warp = \[.*\]", "formant_warp = [0.1, 0.9]", text, count=1))
    with pytest.raises(SystemExit) as stop:
        train_emotion.load_settings(bad)
    message = str(stop.value)
    assert "[augmentation.training_ranges]" in message
    assert "anonymizer.formant_warp[1]" in message and "0 to 0.3" in message
