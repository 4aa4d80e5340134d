"""The TLS context of an MQTT client: the broker's CA, and a client certificate to show it."""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.config import ConfigError


def client_context(
    ca_file: Path, cert_file: Path, key_file: Path, *, names: tuple[str, str, str]
) -> ssl.SSLContext:
    """A context that verifies the broker against ``ca_file`` and presents ``cert_file``.

    ``names`` are how the user set the three files (config keys or command-line options);
    ConfigError names the one that is wrong and what to do.
    """
    for path, name in zip((ca_file, cert_file, key_file), names, strict=True):
        if not path.is_file():
            raise ConfigError(f"{name} = {str(path)!r}: no such file; point it at the PEM file")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{names[0]} = {str(ca_file)!r} is not a PEM CA certificate ({exc})"
        ) from None
    try:
        context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{names[1]} / {names[2]}: cannot use {str(cert_file)!r} with {str(key_file)!r} "
            f"({exc}); give a PEM certificate and the private key that belongs to it"
        ) from None
    return context
