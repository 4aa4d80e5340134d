"""A real Mosquitto for the tests: TLS with client certificates, an ACL, persistence.

Certificates are EC P-256 made with ``cryptography``: a CA, a server certificate for
127.0.0.1/localhost and one client certificate per identity (its CN is the ACL user, through
``use_identity_as_username``). Started as root, mosquitto drops to the ``mosquitto`` user,
so its directory is world-traversable, the certificates world-readable (test keys only) and
the persistence directory owned by that user. The broker can be stopped (SIGTERM, which saves
its persistent sessions) and started again on the same port.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "127.0.0.1"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Authority:
    """A certificate authority writing PEM files into ``root``."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = root / f"{name}.crt"
        self.ca_file.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, cn: str, *, server: bool = False) -> tuple[Path, Path]:
        """(certificate file, key file) for ``cn``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
                ),
                critical=False,
            ).add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        cert_file, key_file = self.root / f"{cn}.crt", self.root / f"{cn}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(_pem_key(key))
        key_file.chmod(0o644)  # test keys: the broker reads its own after dropping root
        return cert_file, key_file


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _accepting(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
    except OSError:
        return False
    return True


class Broker:
    """Mosquitto on a free loopback port; ``acl`` maps a client CN to its ACL lines."""

    def __init__(self, acl: dict[str, list[str]]) -> None:
        exe = shutil.which("mosquitto")
        if exe is None:
            pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        self._exe = exe
        self.root = Path(tempfile.mkdtemp(prefix="callveil-mqtt-"))
        self.root.chmod(0o755)
        self.ca = Authority(self.root, "test-ca")
        server_cert, server_key = self.ca.issue("broker", server=True)
        self.certs = {cn: self.ca.issue(cn) for cn in acl}
        data = self.root / "data"
        data.mkdir()
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("mosquitto")
                os.chown(data, user.pw_uid, user.pw_gid)
            except KeyError:
                pass
        acl_file = self.root / "acl"
        acl_file.write_text(
            "".join(
                f"user {cn}\n" + "".join(f"{line}\n" for line in lines) for cn, lines in acl.items()
            )
        )
        self.port = free_port()
        self.config = self.root / "mosquitto.conf"
        self.config.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous false",
                    "persistence true",
                    f"persistence_location {data}/",
                    "log_dest stderr",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "max_queued_messages 100000",
                    f"listener {self.port} {HOST}",
                    f"cafile {self.ca.ca_file}",
                    f"certfile {server_cert}",
                    f"keyfile {server_key}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "tls_version tlsv1.2",
                    f"acl_file {acl_file}",
                    "",
                ]
            )
        )
        self.log_file = self.root / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                [self._exe, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                pytest.fail(f"mosquitto exited at start:\n{self.log()}")
            if _accepting(self.port):
                return
            time.sleep(0.02)
        pytest.fail(f"mosquitto did not listen within 10 s:\n{self.log()}")

    def stop(self) -> None:
        """Stop as an operator would (SIGTERM): sessions and retained messages are saved."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=10)
        self._proc = None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def tls(self, cn: str | None) -> ssl.SSLContext:
        """A client context trusting the test CA, showing ``cn``'s certificate (None: none)."""
        context = ssl.create_default_context(cafile=str(self.ca.ca_file))
        if cn is not None:
            cert, key = self.certs[cn]
            context.load_cert_chain(str(cert), str(key))
        return context

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
