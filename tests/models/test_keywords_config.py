"""The [keywords] configuration section: Italian defaults and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_an_italian_call_center_lexicon() -> None:
    keywords = parse_config({}).keywords
    assert set(keywords.topics) == {"billing", "cancellation", "technical_fault", "complaint"}
    assert "fattura" in keywords.topics["billing"]
    assert "non funziona" in keywords.topics["technical_fault"]
    assert keywords.model_path.endswith("vosk-model-small-it-0.22")
    assert 0.0 < keywords.threshold < 1.0
    phrases = {p for ps in keywords.topics.values() for p in ps}
    assert keywords.fillers and not phrases & set(keywords.fillers)


def test_the_example_documents_the_defaults() -> None:
    example = load_config(REPO / "callveil.example.toml").keywords
    assert example == parse_config({}).keywords


def test_a_relative_model_path_is_relative_to_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "callveil.toml"
    path.write_text('[keywords]\nmodel_path = "models/vosk-it"\n')
    assert load_config(path).keywords.model_path == str(tmp_path / "models/vosk-it")


def test_a_lexicon_of_its_own_replaces_the_default() -> None:
    raw = {"keywords": {"threshold": 0.9, "topics": {"roaming": ["estero", "roaming"]}}}
    keywords = parse_config(raw).keywords
    assert keywords.topics == {"roaming": ["estero", "roaming"]}
    assert keywords.threshold == 0.9


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ({"topics": {}}, ["keywords.topics", "no topics"]),
        ({"topics": {"billing": []}}, ["keywords.topics", "billing = []", "at least one phrase"]),
        ({"topics": {"billing": ["fattura", " "]}}, ["keywords.topics", "billing[1]", "empty"]),
        (
            {"topics": {"billing": ["rimborso"], "complaint": ["reclamo", "rimborso"]}},
            ["keywords.topics", "'rimborso'", "'billing' and 'complaint'"],
        ),
        (
            {"topics": {"billing": ["non  pagato", "non pagato"]}},
            ["keywords.topics", "'non pagato'", "twice under 'billing'"],
        ),
        ({"topics": {"Technical Fault": ["guasto"]}}, ["keywords.topics", "'Technical Fault'"]),
        ({"topics": {"billing": "fattura"}}, ["keywords.topics.billing", "expected a list"]),
        ({"topics": ["fattura"]}, ["keywords.topics", "expected a table"]),
        ({"topics": {"billing": [3]}}, ["keywords.topics.billing[0]", "wrong type"]),
        ({"threshold": 1.5}, ["keywords.threshold", "1.5", "from 0 to 1"]),
        ({"threshold": "high"}, ["keywords.threshold", "'high'", "expected a number"]),
        ({"fillers": ["e", ""]}, ["keywords.fillers", "empty"]),
        ({"fillers": ["guasto"]}, ["keywords.fillers", "'guasto'", "'technical_fault'"]),
        ({"topic": {}}, ["unknown key 'keywords.topic'", "did you mean 'keywords.topics'"]),
    ],
)
def test_bad_values_name_the_key_and_the_fix(keywords: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"keywords": keywords}, source="box.toml")
    message = str(info.value)
    assert message.startswith("box.toml: ")
    for part in expected:
        assert part in message
