"""A box's configuration for the doctor tests, written as TOML into a temporary directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PASSPHRASE = b"doctor tests passphrase"


def toml_text(raw: dict[str, dict[str, Any]]) -> str:
    """TOML for tables of scalars and lists, with one level of sub-tables (JSON values are
    valid TOML values)."""
    lines = []
    for section, values in raw.items():
        lines.append(f"[{section}]")
        tables = {k: v for k, v in values.items() if isinstance(v, dict)}
        lines += [
            f"{k} = {json.dumps(v, ensure_ascii=False)}"
            for k, v in values.items()
            if k not in tables
        ]
        for name, table in tables.items():
            lines.append(f"[{section}.{name}]")
            lines += [f"{k} = {json.dumps(v, ensure_ascii=False)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def write_box(root: Path, **sections: dict[str, Any]) -> Path:
    """``root/box.toml`` with the software key provider and every state file under
    ``root/state``; ``sections`` replace or add keys of those tables."""
    raw: dict[str, dict[str, Any]] = {
        "keys": {
            "provider": "software",
            "key_file": "state/keys.soft",
            "passphrase_file": "passphrase",
            "state_dir": "state/tpm",
        },
        "privacy": {"sampling_key_file": "state/sampling.key"},
        "vault": {
            "path": "state/vault.db",
            "users_path": "state/users.db",
            "audit_path": "state/audit.db",
        },
        "aggregates": {"state_path": "state/aggregates.db"},
        "mqtt": {"outbox_path": "state/outbox.db"},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    passphrase = root / "passphrase"
    passphrase.write_bytes(PASSPHRASE)
    passphrase.chmod(0o600)
    path = root / "box.toml"
    path.write_text(toml_text(raw), encoding="utf-8")
    path.chmod(0o640)
    return path
