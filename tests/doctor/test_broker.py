"""The broker checks against a real Mosquitto with TLS client certificates and an ACL."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.config import MqttConfig, parse_config
from gateway.doctor.broker import (
    check_broker,
    check_certificate,
    check_connection,
    check_outbox,
)
from gateway.doctor.findings import Status
from gateway.publish.outbox import Outbox
from tests.publish.broker import HOST, Authority, Broker
from tests.publish.clients import Collector, start_publisher
from tests.publish.conftest import software_provider


def mqtt_config(broker: Broker, tmp_path: Path, **changes: Any) -> MqttConfig:
    cert, key = broker.certs["box-a"]
    raw = {
        "host": HOST,
        "port": broker.port,
        "ca_file": str(broker.ca.ca_file),
        "cert_file": str(cert),
        "key_file": str(key),
        "box_id": "box-a",
        "outbox_path": str(tmp_path / "outbox.db"),
        **changes,
    }
    return parse_config({"mqtt": raw}).mqtt


def expired_certificate(directory: Path, cn: str) -> tuple[Path, Path]:
    """A self-signed client certificate that expired yesterday, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now - dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "expired.crt", directory / "expired.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_a_good_box_connects_and_publishes_nothing(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(broker, tmp_path)
    # the box's daemon is connected meanwhile: the doctor must not take its session over
    daemon = start_publisher(broker, software_provider(tmp_path / "box.key"), tmp_path / "d.db")
    watcher = Collector(broker, "callveil/v1/#", client_id="watch")
    try:
        assert daemon.wait_connected(5)
        assert watcher.wait_for(lambda arrivals: len(arrivals) == 1)  # the daemon's birth
        certificate, connection, outbox = check_broker(config)
        time.sleep(0.5)  # anything the doctor published would have arrived by now
        assert daemon.connected
        assert [a.message()["body"]["state"] for a in watcher.snapshot()] == ["online"]
    finally:
        watcher.close()
        daemon.close()
    # the test CA issues certificates for 30 days
    assert certificate.status is Status.WARN
    assert "client certificate 'box-a' valid until" in certificate.detail
    assert certificate.detail.endswith("it expires in 29 days")
    assert (connection.status, connection.check) == (Status.OK, "broker.connection")
    assert connection.detail.startswith(f"{HOST}:{broker.port} accepted this box over TLSv1.")
    assert (outbox.status, outbox.detail) == (
        Status.OK,
        f"no outbox yet at {tmp_path / 'outbox.db'}: nothing waiting",
    )
    assert check_certificate(config, warn_days=7).status is Status.OK


def test_broker_down(broker: Broker, tmp_path: Path) -> None:
    broker.stop()
    finding = check_connection(mqtt_config(broker, tmp_path))
    assert finding.status is Status.FAIL
    assert finding.detail == f"nothing listens on {HOST}:{broker.port}"


def test_foreign_client_certificate(broker: Broker, tmp_path: Path) -> None:
    cert, key = Authority(tmp_path, "foreign-ca").issue("box-a")
    config = mqtt_config(broker, tmp_path, cert_file=str(cert), key_file=str(key))
    certificate = check_certificate(config)
    assert certificate.status is Status.WARN
    assert certificate.detail.endswith("but not issued by the CA in mqtt.ca_file")
    connection = check_connection(config, timeout=5)
    assert connection.status is Status.FAIL
    assert "did not accept this box's client certificate" in connection.fix


def test_expired_client_certificate(broker: Broker, tmp_path: Path) -> None:
    cert, key = expired_certificate(tmp_path, "box-a")
    config = mqtt_config(broker, tmp_path, cert_file=str(cert), key_file=str(key))
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    finding = check_certificate(config)
    assert finding.status is Status.FAIL
    assert finding.detail == f"the client certificate expired on {yesterday:%Y-%m-%d}"
    assert check_connection(config, timeout=5).status is Status.FAIL


def test_certificate_of_another_box(broker: Broker, tmp_path: Path) -> None:
    cert, key = broker.certs["box-b"]
    config = mqtt_config(broker, tmp_path, cert_file=str(cert), key_file=str(key))
    finding = check_certificate(config)
    assert finding.status is Status.FAIL
    assert "is for 'box-b', but mqtt.box_id is 'box-a'" in finding.detail


def test_key_of_another_certificate(broker: Broker, tmp_path: Path) -> None:
    config = mqtt_config(broker, tmp_path, key_file=str(broker.certs["box-b"][1]))
    for finding in (check_certificate(config), check_connection(config)):
        assert finding.status is Status.FAIL
        assert "cannot use" in finding.fix + finding.detail


def test_broker_not_trusted(broker: Broker, tmp_path: Path) -> None:
    foreign = Authority(tmp_path, "foreign-ca")
    finding = check_connection(mqtt_config(broker, tmp_path, ca_file=str(foreign.ca_file)))
    assert finding.status is Status.FAIL
    assert finding.detail.startswith(f"the broker at {HOST}:{broker.port} is not trusted")


def test_no_broker_configured(tmp_path: Path) -> None:
    (finding,) = check_broker(parse_config({}).mqtt)
    assert (finding.status, finding.check) == (Status.WARN, "broker")


def test_outbox_fill_level(tmp_path: Path) -> None:
    config = parse_config(
        {"mqtt": {"outbox_path": str(tmp_path / "outbox.db"), "outbox_max_entries": 4}}
    ).mqtt
    with Outbox(Path(config.outbox_path), max_entries=4, max_bytes=2**20) as outbox:
        outbox.put("t", lambda seq: b"x" * 1000)
        assert check_outbox(config).status is Status.OK
        outbox.put("t", lambda seq: b"x" * 1000)
        outbox.put("t", lambda seq: b"x" * 1000)
        finding = check_outbox(config)
        assert finding.status is Status.WARN
        assert finding.detail.startswith("3 payloads (3 KiB) waiting, 75% of the limit")
        outbox.put("t", lambda seq: b"x" * 1000)
        finding = check_outbox(config)
        assert finding.status is Status.FAIL
        assert "full, new aggregates are refused" in finding.detail
