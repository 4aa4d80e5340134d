"""The release measurement: one digest of the installed code, its configuration and models.

The daemon extends a TPM PCR with this digest at start, and the vault's key is sealed to the
resulting PCR value, so a box whose code, configuration or models were changed cannot
unseal the vault. The digest covers a canonical listing (kind, relative path, content digest)
sorted by path, so it does not depend on directory order, timestamps or where the files live.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path

_DOMAIN = b"callveil release measurement v1\n"
# Written by the interpreter at run time: measuring them would change the digest on its own.
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def _entries(root: Path, label: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(name, kind, digest) for ``root`` (a file) or every file and link below it (a tree)."""
    if not root.is_dir():  # a link at the top (e.g. a "current" release link) is followed
        yield label.encode(), b"f", _file_digest(root)
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        base = Path(dirpath)
        for entry in (*dirnames, *filenames):
            path = base / entry
            name = f"{label}/{path.relative_to(root).as_posix()}".encode()
            if path.is_symlink():
                # the link itself, not what it points to: retargeting a link changes the digest
                yield name, b"l", hashlib.sha256(os.fsencode(os.readlink(path))).digest()
            elif path.is_file() and not entry.endswith(_SKIP_SUFFIXES):
                yield name, b"f", _file_digest(path)


def release_measurement(
    package_root: Path, config_path: Path, model_paths: Iterable[Path]
) -> bytes:
    """SHA-256 over the package tree, the configuration file and each model (file or tree).

    Raises OSError when something cannot be read: a release that cannot be measured must not
    start.
    """
    entries = [
        *_entries(package_root, "package"),
        *_entries(config_path, "config"),
        *(e for i, model in enumerate(model_paths) for e in _entries(model, f"model{i}")),
    ]
    entries.sort()
    digest = hashlib.sha256(_DOMAIN)
    for name, kind, content in entries:
        digest.update(struct.pack(">I", len(name)) + name + kind + content)
    return digest.digest()
