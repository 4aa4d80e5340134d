from pathlib import Path

import pytest

from gateway.aggregates.labels import check_label
from gateway.config import Config, ConfigError, load_config, parse_config


def test_empty_file_gives_documented_defaults(tmp_path: Path) -> None:
    path = tmp_path / "callveil.toml"
    path.write_text("")
    config = load_config(path)
    assert config == Config()
    assert config.privacy.sample_rate == 0.10
    assert config.privacy.trim_seconds == 10.0


def test_shipped_example_is_valid() -> None:
    example = Path(__file__).resolve().parents[1] / "callveil.example.toml"
    config = load_config(example)
    assert config.contract.rules, "the example shows at least one contract rule"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"privacy": {"sampel_rate": 0.1}},
            ["privacy.sampel_rate", "did you mean 'privacy.sample_rate'"],
        ),
        ({"bogus": {}}, ["unknown key 'bogus'"]),
        (
            {"privacy": {"sample_rate": "ten"}},
            ["privacy.sample_rate", "'ten'", "expected a number"],
        ),
        ({"privacy": {"sample_rate": 1.5}}, ["privacy.sample_rate", "1.5", "from 0 to 1"]),
        ({"privacy": {"trim_seconds": True}}, ["privacy.trim_seconds", "wrong type"]),
        ({"capture": {"sip_ports": 5060}}, ["capture.sip_ports", "expected a list"]),
        ({"capture": {"sip_ports": [70000]}}, ["capture.sip_ports[0]", "70000", "1 to 65535"]),
        ({"capture": {"sip_ports": []}}, ["capture.sip_ports is empty"]),
        (
            {"roles": {"operator_networks": ["10.1.0.0/40"]}},
            ["roles.operator_networks", "10.1.0.0/40"],
        ),
        (
            {"roles": {"caller_default": "boss"}},
            ["roles.caller_default", "'boss'", "customer, operator, unknown"],
        ),
        ({"site": {"name": "Milano Centro"}}, ["site.name", "lowercase"]),
        (
            {"contract": {"rules": [{"kind": "header", "pattern": "yes"}]}},
            ["contract.rules[0].header is empty"],
        ),
        (
            {"contract": {"rules": [{"kind": "queue", "pattern": "(("}]}},
            ["contract.rules[0].pattern", "regular expression"],
        ),
        (
            {"contract": {"rules": [{"kind": "queue", "pattern": "x", "extra": 1}]}},
            ["unknown key 'contract.rules[0].extra'"],
        ),
        (
            {"contract": {"queue_header": "X-Queue"}},
            ["contract.queue_header", "moved to 'queues.header'"],
        ),
        ({"queues": {"header": "X-Queue:"}}, ["queues.header", "'X-Queue:'", "header name"]),
        (
            {"queues": {"header": "", "labels": ["sales"]}},
            ["queues.header is empty", "queues.labels = []"],
        ),
        (
            {"queues": {"header": ""}, "contract": {"rules": [{"kind": "queue", "pattern": "x"}]}},
            ["queues.header is empty", "kind 'queue'"],
        ),
        ({"queues": {"labels": "billing"}}, ["queues.labels", "expected a list"]),
        ({"queues": {"labels": [7]}}, ["queues.labels[0]", "expected a string"]),
        ({"queues": {"labels": ["Billing"]}}, ["queues.labels", "'Billing'", "lowercase"]),
        ({"queues": {"labels": ["billing queue"]}}, ["queues.labels", "'billing queue'"]),
        ({"queues": {"labels": ["a/b"]}}, ["queues.labels", "'a/b'"]),
        ({"queues": {"labels": ["x" * 64]}}, ["queues.labels", "1-63"]),
        ({"queues": {"labels": ["sales", "sales"]}}, ["queues.labels", "'sales' is listed twice"]),
        ({"queues": {"label": ["sales"]}}, ["did you mean 'queues.labels'"]),
        (
            {"logging": {"level": "verbose"}},
            ["logging.level", "'verbose'", "debug, info, warning, error"],
        ),
        ({"capture": 3}, ["capture must be a table"]),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_fix(raw: dict, expected: list[str]) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="box.toml")
    message = str(info.value)
    assert message.startswith("box.toml: ")
    for part in expected:
        assert part in message


@pytest.mark.parametrize("label", ["", "-sales", "Sales", "sales!", "x" * 64, "sales/eu", "+"])
def test_config_refuses_the_queue_labels_the_aggregates_refuse(label: str) -> None:
    with pytest.raises(ValueError):
        check_label(label, "queue")
    with pytest.raises(ConfigError, match=r"queues\.labels"):
        parse_config({"queues": {"header": "X-Queue", "labels": [label]}})


def test_queues_are_off_by_default_and_read_as_written() -> None:
    # the header has a default (contract rules of kind "queue" read it too); no labels, no queues
    assert (Config().queues.header, Config().queues.labels) == ("X-Queue", [])
    queues = parse_config(
        {"queues": {"header": "X-Asterisk-Queue", "labels": ["billing", "support-2"]}}
    ).queues
    assert (queues.header, queues.labels) == ("X-Asterisk-Queue", ["billing", "support-2"])
    for label in queues.labels:
        assert check_label(label, "queue") == label


def test_syntax_error_and_missing_file_are_clear(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[privacy\nsample_rate = 0.1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_config(tmp_path / "absent.toml")


def test_integers_are_accepted_where_numbers_are_expected() -> None:
    config = parse_config({"privacy": {"sample_rate": 1, "trim_seconds": 0}})
    assert config.privacy.sample_rate == 1.0
    assert isinstance(config.privacy.trim_seconds, float)
