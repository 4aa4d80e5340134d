"""The MQTT broker: the client certificate, a real TLS connection up to CONNACK, the outbox.

The connection uses the client certificate and CA the publisher uses, under its own client
id, so that it never takes over the running daemon's session (a broker drops the older of
two connections with one id, which would publish the daemon's last will). It publishes
nothing and disconnects once the broker has answered.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import ConfigError, MqttConfig
from gateway.doctor.findings import Finding, fail, ok, warn
from gateway.publish.outbox import Outbox
from gateway.publish.tls import client_context
from gateway.vault.records import VaultError

CERTIFICATE = "broker.certificate"
CONNECTION = "broker.connection"
OUTBOX = "broker.outbox"
_NAMES = ("mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file")


def check_broker(mqtt_config: MqttConfig) -> list[Finding]:
    if not mqtt_config.host:
        return [
            warn(
                "broker",
                "mqtt.host is empty: this box publishes no aggregates",
                "set mqtt.host, mqtt.box_id and the certificate files to publish to the centre",
            )
        ]
    return [
        check_certificate(mqtt_config),
        check_connection(mqtt_config),
        check_outbox(mqtt_config),
    ]


def _tls(mqtt_config: MqttConfig) -> ssl.SSLContext:
    return client_context(
        Path(mqtt_config.ca_file),
        Path(mqtt_config.cert_file),
        Path(mqtt_config.key_file),
        names=_NAMES,
    )


def check_certificate(
    mqtt_config: MqttConfig, *, now: dt.datetime | None = None, warn_days: int = 30
) -> Finding:
    """The CA, the client certificate and its key: readable, matching, in date, named right."""
    try:
        _tls(mqtt_config)  # files readable, PEM, and the key belongs to the certificate
        ca = x509.load_pem_x509_certificate(Path(mqtt_config.ca_file).read_bytes())
        cert = x509.load_pem_x509_certificate(Path(mqtt_config.cert_file).read_bytes())
    except ConfigError as exc:
        return fail(CERTIFICATE, "the certificate files cannot be used", str(exc))
    except (OSError, ValueError) as exc:
        return fail(
            CERTIFICATE,
            f"cannot read the certificates ({exc})",
            "give PEM files readable by the service (key: mode 0640 root:callveil)",
        )
    now = now or dt.datetime.now(dt.UTC)
    renew = "have the centre issue a new client certificate for this box and install it"
    for what, item in (("client certificate", cert), ("CA certificate", ca)):
        if item.not_valid_after_utc <= now:
            return fail(
                CERTIFICATE,
                f"the {what} expired on {item.not_valid_after_utc:%Y-%m-%d}",
                renew if item is cert else "install the centre's current CA certificate",
            )
        if item.not_valid_before_utc > now:
            return fail(
                CERTIFICATE,
                f"the {what} is valid only from {item.not_valid_before_utc:%Y-%m-%d}",
                "check this box's clock (see the clock check), or install a valid certificate",
            )
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    if not mqtt_config.box_id:
        return fail(
            CERTIFICATE,
            "mqtt.box_id is empty",
            f'set mqtt.box_id to the CN of the client certificate, box_id = "{common_name}"',
        )
    if common_name != mqtt_config.box_id:
        return fail(
            CERTIFICATE,
            f"the client certificate is for {common_name!r}, but mqtt.box_id is "
            f"{mqtt_config.box_id!r}: the centre's ACL expects the two to match",
            "install this box's own certificate, or correct mqtt.box_id",
        )
    days = (cert.not_valid_after_utc - now).days
    seen = f"client certificate {common_name!r} valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return warn(
            CERTIFICATE,
            f"{seen}, but not issued by the CA in mqtt.ca_file",
            "fine if the broker trusts another CA for clients (see broker.connection); "
            "otherwise install the certificate the centre issued for this box",
        )
    if days < warn_days:
        return warn(CERTIFICATE, f"{seen}: it expires in {days} days", renew)
    return ok(CERTIFICATE, f"{seen} ({days} days), issued by the CA in mqtt.ca_file")


def check_connection(mqtt_config: MqttConfig, *, timeout: float = 10.0) -> Finding:
    """Connect over TLS with the client certificate and wait for the broker's CONNACK."""
    where = f"{mqtt_config.host}:{mqtt_config.port}"
    try:
        tls = _tls(mqtt_config)
    except ConfigError as exc:
        return fail(
            CONNECTION,
            f"not tried: the certificate files cannot be used ({exc})",
            "fix the certificate files first (see broker.certificate)",
        )
    answer: dict[str, Any] = {}
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"callveil-{mqtt_config.box_id or 'box'}-doctor",
        clean_session=True,
        protocol=mqtt.MQTTv311,
    )
    client.tls_set_context(tls)
    client.connect_timeout = timeout
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.setdefault("connack", reason)
    client.on_disconnect = lambda _c, _u, _f, reason, _p: answer.setdefault("closed", reason)
    started = time.monotonic()
    try:
        client.connect(mqtt_config.host, mqtt_config.port, keepalive=mqtt_config.keepalive)
    except ssl.SSLCertVerificationError as exc:
        return fail(
            CONNECTION,
            f"the broker at {where} is not trusted: {exc.verify_message}",
            "mqtt.ca_file must hold the CA that signed the broker's certificate, and mqtt.host "
            "must be a name or address that certificate lists",
        )
    except ssl.SSLError as exc:
        return fail(
            CONNECTION,
            f"the TLS handshake with {where} failed ({exc.reason or exc})",
            _REFUSED_FIX,
        )
    except ConnectionRefusedError:
        return fail(
            CONNECTION,
            f"nothing listens on {where}",
            "check that the broker runs and that mqtt.host and mqtt.port name it",
        )
    except socket.gaierror as exc:
        return fail(
            CONNECTION,
            f"the host name {mqtt_config.host!r} does not resolve ({exc.strerror})",
            "correct mqtt.host, or fix this box's DNS configuration",
        )
    except OSError as exc:
        return fail(
            CONNECTION,
            f"cannot reach {where} ({exc.strerror or type(exc).__name__})",
            "check the network route and any firewall between this box and the broker",
        )
    deadline = started + timeout
    while not answer and time.monotonic() < deadline:
        client.loop(timeout=0.1)
    elapsed_ms = (time.monotonic() - started) * 1000
    reason = answer.get("connack")
    accepted = reason is not None and not reason.is_failure
    version = client.socket().version() if accepted else None
    client.disconnect()
    client.loop(timeout=0.05)  # sends the DISCONNECT and closes the socket
    if accepted:
        return ok(
            CONNECTION,
            f"{where} accepted this box over {version} (CONNACK after {elapsed_ms:.0f} ms)",
        )
    if reason is not None:
        return fail(CONNECTION, f"{where} refused this box: {reason}", _REFUSED_FIX)
    if "closed" in answer:
        return fail(
            CONNECTION,
            f"{where} closed the connection without a CONNACK",
            _REFUSED_FIX,
        )
    return fail(
        CONNECTION,
        f"no CONNACK from {where} within {timeout:g} s",
        "check that the port is an MQTT-over-TLS listener and that the broker is not overloaded",
    )


_REFUSED_FIX = (
    "the broker did not accept this box's client certificate: check that mqtt.cert_file and "
    "mqtt.key_file are this box's and that the broker trusts the CA that issued them"
)


def check_outbox(mqtt_config: MqttConfig, *, warn_fill: float = 0.5) -> Finding:
    """Payloads waiting for the broker, and how close the outbox is to refusing new ones."""
    path = Path(mqtt_config.outbox_path)
    if not path.exists():
        return ok(OUTBOX, f"no outbox yet at {path}: nothing waiting")
    try:
        with Outbox(
            path,
            max_entries=mqtt_config.outbox_max_entries,
            max_bytes=mqtt_config.outbox_max_bytes,
        ) as outbox:
            entries, size = outbox.usage()
    except VaultError as exc:
        return fail(OUTBOX, f"the outbox {path} cannot be opened", str(exc))
    fill = max(entries / mqtt_config.outbox_max_entries, size / mqtt_config.outbox_max_bytes)
    seen = f"{entries} payloads ({size / 1024:.0f} KiB) waiting, {fill:.0%} of the limit"
    drain = (
        "restore the broker connection (see broker.connection): the outbox empties as the "
        "broker acknowledges; or raise mqtt.outbox_max_entries / mqtt.outbox_max_bytes"
    )
    if entries >= mqtt_config.outbox_max_entries or size >= mqtt_config.outbox_max_bytes:
        return fail(OUTBOX, f"{seen}: full, new aggregates are refused", drain)
    if fill > warn_fill:
        return warn(OUTBOX, f"{seen}: the broker has not taken them", drain)
    return ok(OUTBOX, seen)
