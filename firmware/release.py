"""Release manifests: the package and model digests a box measures, signed with the release key.

    release.py keygen --out NAME [--passphrase-file FILE]      NAME.key (0600) and NAME.pub
    release.py build [--package DIR] [--model PATH ...] [--release VERSION] [--out FILE]
    release.py sign MANIFEST --key NAME.key [--passphrase-file FILE] [--out FILE]

``build`` measures an installed callveil package directory (default: the one this interpreter
imports) and the models shipped with it, listed with ``--model`` in the order the box measures
them: ``emotion.model_path`` if set, then ``keywords.model_path``. The site's configuration is
not in the manifest; the security team gives it to ``callveil verify-attestation quote
--manifest ... --release-key NAME.pub --config FILE``. Run with the Python that has callveil
installed: the digests come from the same code the box runs.
"""

from __future__ import annotations

import argparse
import base64
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

import gateway
from gateway.verifiers.attestation import (
    MANIFEST_FORMAT,
    component_digest,
    manifest_signed_bytes,
    release_key_id,
)

PACKAGE_ROOT = Path(gateway.__file__).resolve().parent


class ReleaseError(Exception):
    """A problem with the inputs, phrased for the person making the release."""


def _passphrase(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        # one trailing newline is what editors and `echo` add; it is not part of the secret
        passphrase = Path(path).read_bytes().removesuffix(b"\n")
    except OSError as exc:
        raise ReleaseError(f"cannot read the passphrase file: {exc}") from None
    if not passphrase:
        raise ReleaseError(f"the passphrase file {path} is empty: write the passphrase into it")
    return passphrase


def _create(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ReleaseError(f"{path} exists: a release key is never overwritten") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def keygen(out: str, passphrase: bytes | None) -> tuple[Path, Path]:
    """A new Ed25519 release key: NAME.key (private, 0600) and NAME.pub (for verifiers)."""
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    key_path, pub_path = Path(f"{out}.key"), Path(f"{out}.pub")
    if pub_path.exists():
        raise ReleaseError(f"{pub_path} exists: a release key is never overwritten")
    _create(key_path, private, 0o600)
    _create(pub_path, public, 0o644)
    return key_path, pub_path


def _installed_release(package: Path) -> str:
    """The version of the callveil distribution installed beside ``package``."""
    for dist in importlib.metadata.distributions(path=[str(package.parent)]):
        if dist.metadata["Name"] == "callveil":
            return dist.version
    if package == PACKAGE_ROOT:
        return gateway.__version__
    raise ReleaseError(f"no callveil distribution metadata beside {package}: give --release")


def build(package: Path, models: list[Path], release: str | None) -> dict[str, Any]:
    """The unsigned manifest of the package directory ``package`` and ``models``."""
    package = package.resolve()
    if not (package / "__init__.py").is_file() or not (package / "seal").is_dir():
        raise ReleaseError(
            f"{package} is not an installed callveil package (the 'gateway' directory in "
            "site-packages, e.g. /opt/callveil/venv/lib/python3.11/site-packages/gateway)"
        )
    listed = []
    for model in models:
        if not model.exists():
            raise ReleaseError(f"model {model} does not exist")
        listed.append({"name": model.name, "digest": component_digest(model).hex()})
    return {
        "format": MANIFEST_FORMAT,
        "release": release or _installed_release(package),
        "package": component_digest(package).hex(),
        "models": listed,
    }


def sign(document: dict[str, Any], key_pem: bytes, passphrase: bytes | None) -> dict[str, Any]:
    """``document`` with its signature by the release key (any earlier signature replaced)."""
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        raise ReleaseError(f"not a {MANIFEST_FORMAT} document; make one with 'build'")
    try:
        key = serialization.load_pem_private_key(key_pem, passphrase)
    except TypeError:
        raise ReleaseError(
            "the key is encrypted: give --passphrase-file"
            if passphrase is None
            else "the key is not encrypted: leave out --passphrase-file"
        ) from None
    except ValueError:
        raise ReleaseError(
            "cannot load the key: not a PEM private key, or a wrong passphrase"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ReleaseError("the release key must be an Ed25519 key (make one with 'keygen')")
    signature = key.sign(manifest_signed_bytes(document))
    return {
        **document,
        "signature": {
            "key_id": release_key_id(key.public_key()),
            "ed25519": base64.b64encode(signature).decode(),
        },
    }


def _dump(document: dict[str, Any], out: str | None) -> None:
    text = json.dumps(document, indent=1, sort_keys=True) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        Path(out).write_text(text, encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="release.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("keygen", help="make a new Ed25519 release key pair")
    gen.add_argument("--out", required=True, help="NAME: writes NAME.key and NAME.pub")
    gen.add_argument("--passphrase-file", help="encrypt the private key with this passphrase")
    make = sub.add_parser("build", help="measure a package directory and models: the manifest")
    make.add_argument("--package", type=Path, default=PACKAGE_ROOT, help="installed 'gateway'")
    make.add_argument(
        "--model", type=Path, action="append", default=[], help="shipped model, in measured order"
    )
    make.add_argument("--release", help="release name (default: the installed version)")
    make.add_argument("--out", help="write here instead of standard output")
    signing = sub.add_parser("sign", help="sign a manifest with the release key")
    signing.add_argument("manifest")
    signing.add_argument("--key", required=True, help="the release private key (NAME.key)")
    signing.add_argument("--passphrase-file", help="its passphrase, if it is encrypted")
    signing.add_argument("--out", help="write here instead of replacing MANIFEST")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "keygen":
            key, pub = keygen(args.out, _passphrase(args.passphrase_file))
            print(f"release key {key} (keep it offline), public key {pub} (give it to verifiers)")
        elif args.command == "build":
            _dump(build(args.package, args.model, args.release), args.out)
        else:
            try:
                document = json.loads(Path(args.manifest).read_text(encoding="utf-8"))
                key_pem = Path(args.key).read_bytes()
            except (OSError, ValueError) as exc:
                raise ReleaseError(f"cannot read: {exc}") from None
            signed = sign(document, key_pem, _passphrase(args.passphrase_file))
            _dump(signed, args.out or args.manifest)
            print(f"signed with release key {signed['signature']['key_id']}", file=sys.stderr)
    except (ReleaseError, OSError) as exc:
        print(f"release.py: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
