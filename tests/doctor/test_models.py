"""The model checks with the shipped emotion and VAD models and the Korean Vosk test model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.doctor.findings import Status
from gateway.doctor.models import check_emotion, check_keywords, check_vad
from tests.models.speech import FILLERS, TOPICS


def test_shipped_emotion_model_scores_a_second(tmp_path: Path) -> None:
    finding = check_emotion(parse_config({}).emotion)
    assert finding.status is Status.OK
    assert finding.detail.startswith("emotion.onnx loaded in ")
    broken = tmp_path / "emotion.onnx"
    broken.write_bytes(b"not a model")
    finding = check_emotion(parse_config({"emotion": {"model_path": str(broken)}}).emotion)
    assert finding.status is Status.FAIL
    assert f"emotion model {broken} is not a readable ONNX model" in finding.fix


def test_topic_words_are_in_the_vocabulary(vosk_model: Path) -> None:
    keywords = {"model_path": str(vosk_model), "topics": TOPICS, "fillers": FILLERS}
    finding = check_keywords(parse_config({"keywords": keywords}).keywords)
    assert finding.status is Status.OK
    assert finding.detail.endswith("every word of the 7 topic phrases and 15 fillers")


def test_a_topic_word_missing_from_the_vocabulary_fails(vosk_model: Path) -> None:
    topics = {**TOPICS, "billing": ["요금 청구서", "fattura"]}
    keywords = {"model_path": str(vosk_model), "topics": topics, "fillers": FILLERS}
    finding = check_keywords(parse_config({"keywords": keywords}).keywords)
    assert finding.status is Status.FAIL
    assert "keywords.topics.billing: 'fattura' ('fattura')" in finding.fix


def test_missing_vosk_model_directory_fails(tmp_path: Path) -> None:
    config = parse_config({"keywords": {"model_path": str(tmp_path / "absent")}}).keywords
    finding = check_keywords(config)
    assert finding.status is Status.FAIL
    assert finding.detail == f"keywords.model_path {tmp_path / 'absent'} does not exist"


@pytest.mark.parametrize("rate", [8000, 16000])
def test_vad_hears_no_speech_in_silence(rate: int) -> None:
    finding = check_vad(parse_config({"speech": {"analysis_rate": rate}}).speech)
    assert finding.status is Status.OK
    assert finding.detail.startswith(f"silero VAD at {rate} Hz")
