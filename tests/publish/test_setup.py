"""Configuration of aggregates and MQTT: bad values and missing files are named with the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.config import ConfigError, parse_config
from gateway.publish.publisher import open_publisher
from gateway.publish.tls import client_context
from tests.publish.broker import Authority, free_port


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mqtt": {"box_id": "Box 7"}}, "mqtt.box_id: 'Box 7' must be 1-63 lowercase"),
        ({"mqtt": {"box_id": "10.0.0.7"}}, "mqtt.box_id: '10.0.0.7' must be"),
        ({"mqtt": {"port": 0}}, "mqtt.port = 0 is out of range"),
        ({"mqtt": {"outbox_max_bytes": 10}}, "mqtt.outbox_max_bytes = 10 is out of range"),
        ({"aggregates": {"period": "month"}}, "use one of day, week"),
        ({"aggregates": {"k": 1}}, "aggregates.k = 1 is out of range"),
        ({"aggregates": {"epsilon": 0}}, "aggregates.epsilon = 0 is out of range"),
    ],
)
def test_bad_values_are_named(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(raw)


def test_defaults_publish_nothing_until_configured(providers: dict) -> None:
    config = parse_config({})
    assert (config.aggregates.period, config.aggregates.k, config.aggregates.dp) == (
        "day",
        10,
        False,
    )
    with pytest.raises(ConfigError, match=re.escape("mqtt.host is empty")):
        open_publisher(config, providers["box-a"])
    config = parse_config({"mqtt": {"host": "broker.example"}})
    with pytest.raises(ConfigError, match=re.escape("mqtt.box_id is empty")):
        open_publisher(config, providers["box-a"])
    config = parse_config({"mqtt": {"host": "broker.example", "box_id": "rome-01"}})
    with pytest.raises(
        ConfigError, match=re.escape("mqtt.ca_file = '/etc/callveil/mqtt/ca.crt': no such")
    ):
        open_publisher(config, providers["box-a"])


def test_a_certificate_with_the_wrong_key_is_named(tmp_path: Path) -> None:
    ca = Authority(tmp_path, "ca")
    cert, _ = ca.issue("rome-01")
    _, other_key = ca.issue("milan-02")
    with pytest.raises(ConfigError, match=re.escape("mqtt.cert_file / mqtt.key_file: cannot use")):
        client_context(
            ca.ca_file, cert, other_key, names=("mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file")
        )
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(ConfigError, match="is not a PEM CA certificate"):
        client_context(tmp_path / "junk.crt", cert, other_key, names=("--ca", "--cert", "--key"))


def test_a_configured_box_builds_its_publisher(providers: dict, tmp_path: Path) -> None:
    ca = Authority(tmp_path, "ca")
    cert, key = ca.issue("rome-01")
    raw = {
        "site": {"name": "rome"},
        "mqtt": {
            "host": "127.0.0.1",
            "port": free_port(),  # nothing listens: the payload waits in the outbox
            "box_id": "rome-01",
            "ca_file": str(ca.ca_file),
            "cert_file": str(cert),
            "key_file": str(key),
            "outbox_path": str(tmp_path / "outbox.db"),
        },
    }
    with open_publisher(parse_config(raw), providers["box-a"]).start() as publisher:
        assert publisher.publish({"period": "2026-03-02"}) == 1  # on disk, broker or not
